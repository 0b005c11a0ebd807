"""Checkpoint folders in HF layout: downloaded from the hub (`download`) or converted from GGUF (`convert_gguf`).
Imports only model's file helpers (atomic writes, DownloadError); everything else only reads the folders written
here."""

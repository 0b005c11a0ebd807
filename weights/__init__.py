"""Checkpoint folders in HF layout: downloaded from the hub (`download`) or converted from GGUF (`convert_gguf`).
Imports only model (its atomic folder writes); everything else only reads the folders written here."""

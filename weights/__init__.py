"""Checkpoint folders in HF layout: downloaded from the hub (`download`) or converted from GGUF (`convert_gguf`)."""

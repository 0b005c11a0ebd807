"""Resumable training state in one file, replaced atomically: a kill at any moment leaves either the previous
checkpoint or the new one, never a torn file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from train.schedule import WarmupCosine


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: WarmupCosine, progress: dict[str, Any]
) -> None:
    state = {
        "trainable": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        "progress": progress,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: WarmupCosine
) -> dict[str, Any]:
    """Restore model, optimizer, schedule and RNG from `path`; return the saved progress record."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(state["trainable"]):
        diff = sorted(set(params) ^ set(state["trainable"]))
        raise ValueError(f"{path}: checkpoint does not fit this model (differs in {diff[:3]} ...)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state["trainable"][name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return state["progress"]

"""Resumable training state in one file, replaced atomically: a kill at any moment leaves either the previous
checkpoint or the new one, never a torn file.

It holds tensors, dicts, lists and numbers only (RNG states are ByteTensors), so it is read with torch's
weights-only unpickler: a checkpoint from a shared folder or a colleague's run directory cannot run code when a
run resumes from it; one holding anything else is refused.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lora.inject import trainable_parameters
from model.files import atomic_file
from train.schedule import WarmupCosine


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainable_parameters(model).items()}


def rng_state() -> dict[str, Any]:
    """This process's random state (dropout masks): saved per rank, so a resumed run draws what it would have."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: WarmupCosine,
    progress: dict[str, Any],
    rng_states: list[dict[str, Any]],
) -> None:
    """`rng_states[r]` is `rng_state()` of rank r; the other state is the same on every rank."""
    state = {
        "trainable": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "world_size": len(rng_states),
        "rng": rng_states,
        "progress": progress,
    }
    with atomic_file(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: WarmupCosine,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Restore model, optimizer, schedule and this rank's RNG from `path`; return the saved progress
    record.

    Only the world size that wrote the checkpoint can resume it: the ranks' shares of the data follow from it.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed|$)", str(e), re.MULTILINE)
        raise ValueError(f"{path}: holds more than tensors and numbers ({found.group(1) if found else e}); "
                         f"refused, since loading it could run code; choose another --out") from None
    saved_world_size, rng_states = state["world_size"], state["rng"]
    if saved_world_size != world_size:
        raise ValueError(f"{path}: written by {saved_world_size} process(es) but this run has {world_size}; resume "
                         f"it with {saved_world_size} (torchrun --nnodes x --nproc_per_node; 1 is plain "
                         f"`python -m train`), or choose another --out")
    params = trainable_parameters(model)
    if set(params) != set(state["trainable"]):
        diff = sorted(set(params) ^ set(state["trainable"]))
        raise ValueError(f"{path}: checkpoint does not fit this model (differs in {diff[:3]} ...)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state["trainable"][name])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = rng_states[rank]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["progress"]

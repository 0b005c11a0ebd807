"""train/checkpoint.py: a checkpoint restores what it saved, and loading one never runs code that a file brings."""

from __future__ import annotations

import torch

import pytest

from train.checkpoint import load_checkpoint, rng_state, save_checkpoint
from train.optim import AdamW
from train.schedule import WarmupCosine


class RunsCode:
    """Unpickled, it calls open(marker, "w"): the file appearing shows that loading ran code of the file's choice."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def training_state(seed: int) -> tuple[torch.nn.Linear, AdamW, WarmupCosine]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = AdamW(model.parameters(), lr=1e-2)
    scheduler = WarmupCosine(optimizer, total_steps=10, warmup_steps=2)
    return model, optimizer, scheduler


def test_a_checkpoint_restores_what_it_saved(tmp_path):
    model, optimizer, scheduler = training_state(seed=0)
    for _ in range(3):
        model(torch.randn(5, 4)).square().sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    progress = {"step": 3, "best": {"valid_documents_f1": 50.0, "valid_documents_per_type_f1": {"PER": 60.0}}}
    save_checkpoint(tmp_path / "checkpoint.pt", model, optimizer, scheduler, progress, [rng_state()])
    expected_draw = torch.rand(3)

    resumed, resumed_optimizer, resumed_scheduler = training_state(seed=1)
    assert load_checkpoint(tmp_path / "checkpoint.pt", resumed, resumed_optimizer, resumed_scheduler) == progress
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed.parameters()))
    assert resumed_scheduler.steps_done == 3 and resumed_scheduler.current_lrs() == scheduler.current_lrs()
    state, resumed_state = optimizer.state_dict()["state"], resumed_optimizer.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg"], resumed_state[i]["exp_avg"]) for i in state)
    assert torch.equal(torch.rand(3), expected_draw)  # the random state of the moment of saving


def test_a_checkpoint_holding_an_object_is_refused_before_it_runs_code(tmp_path):
    """A run directory from a shared folder or a colleague: loading its checkpoint must not run its code."""
    model, optimizer, scheduler = training_state(seed=0)
    marker = tmp_path / "code-ran"
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, optimizer, scheduler, {"step": 0, "note": RunsCode(str(marker))}, [rng_state()])
    with pytest.raises(ValueError, match=f"{path}: .*io.open"):
        load_checkpoint(path, model, optimizer, scheduler)
    assert not marker.exists()

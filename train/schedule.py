"""Learning rate: linear warmup to a peak, then half a cosine down to a floor (Loshchilov & Hutter
2017, SGDR, without restarts), then the floor for as long as training goes on."""

import math
from typing import Any

import torch


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Warmup: peak_lr * (step + 1) / warmup_steps, so step 0 already moves the weights and step
    warmup_steps - 1 reaches the peak. Decay: cosine from peak_lr at step warmup_steps to min_lr at
    step total_steps; min_lr from there on.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got warmup_steps={warmup_steps}, "
                         f"total_steps={total_steps}")
    if not 0.0 <= min_lr <= peak_lr:
        raise ValueError(f"need 0 <= min_lr <= peak_lr, got min_lr={min_lr}, peak_lr={peak_lr}")
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets each param group's "lr" from cosine_with_warmup. Each group's lr at construction is its
    peak (so groups may have different peaks) and min_lr_ratio * peak its floor.

    Call `step()` once after every optimizer step. The state dict keeps the step count and the
    peaks, so resuming works whether the optimizer's state (whose lr is the current, not the
    peak, value) is loaded before or after this scheduler is built.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 min_lr_ratio: float = 0.1):
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.peak_lrs = [group["lr"] for group in optimizer.param_groups]
        self.steps_done = 0
        self._apply()

    def step(self) -> None:
        self.steps_done += 1
        self._apply()

    def current_lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done, "peak_lrs": list(self.peak_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["peak_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(f"scheduler state has {len(state['peak_lrs'])} param groups, the optimizer "
                             f"{len(self.optimizer.param_groups)}")
        self.steps_done = state["steps_done"]
        self.peak_lrs = list(state["peak_lrs"])
        self._apply()

    def _apply(self) -> None:
        for group, peak in zip(self.optimizer.param_groups, self.peak_lrs):
            group["lr"] = cosine_with_warmup(self.steps_done, self.total_steps, self.warmup_steps,
                                             peak, peak * self.min_lr_ratio)

"""An exponential moving average of the trained weights (Polyak & Juditsky 1992; the "EMA" of image and language
model training): evaluations and the kept adapter can use the average of the last steps instead of the last
step's weights, whose noise the learning rate leaves in them.

The average starts as a copy of the weights. Its decay grows with the steps, `min(decay, (1 + t) / (10 + t))`
after t updates (as TensorFlow's ExponentialMovingAverage with num_updates), so that it does not cling to the
random start: it averages over about the last ninth of the steps taken (1 / (1 - d) steps at decay d) until
`decay` is reached, after about 9 / (1 - decay) steps, and over the last 1 / (1 - decay) from then on."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


class WeightAverage:
    """The moving average of `params` (the trainable weights, updated in place by the optimizer)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay}")
        self.params, self.decay, self.updates = list(params), decay, 0
        self.average = [p.detach().clone() for p in self.params]

    def step_decay(self) -> float:
        """The decay the next update uses."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: average <- decay * average + (1 - decay) * weights."""
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1.0 - self.step_decay())
        self.updates += 1

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in the model for the duration (to evaluate or save them), the trained ones after."""
        trained = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, a in zip(self.params, self.average):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, t in zip(self.params, trained):
                    p.copy_(t)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "average": [a.clone() for a in self.average]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["decay"] != self.decay or len(state["average"]) != len(self.average):
            raise ValueError(f"the saved average (decay {state['decay']}, {len(state['average'])} tensors) does not "
                             f"fit this one (decay {self.decay}, {len(self.average)} tensors)")
        for a, saved in zip(self.average, state["average"]):
            if a.shape != saved.shape:
                raise ValueError(f"a saved average of shape {tuple(saved.shape)} for weights of {tuple(a.shape)}")
            a.copy_(saved)
        self.updates = state["updates"]

"""AdamW written out: Adam (Kingma & Ba 2015, Algorithm 1) with decoupled weight decay
(Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization", Algorithm 2). Same constructor,
state keys and arithmetic as torch.optim.AdamW without AMSGrad (its default).
"""

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class AdamW(torch.optim.Optimizer):
    """For each parameter p with gradient g, at step t (lr, wd, betas, eps from its param group):

        p   <- p - lr * wd * p                        decay decoupled from the gradient
        m   <- beta1 * m + (1 - beta1) * g            first moment   (state "exp_avg")
        v   <- beta2 * v + (1 - beta2) * g^2          second moment  (state "exp_avg_sq")
        p   <- p - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)

    The bias corrections 1 - beta^t undo the zero initialization of m and v. L&H scale the decay by
    the schedule multiplier only; like torch we scale it by the (scheduled) lr, so wd means the same
    as in torch.optim.AdamW.
    State dicts save and load through torch.optim.Optimizer unchanged.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        if lr < 0.0:
            raise ValueError(f"AdamW: invalid learning rate {lr}")
        if eps < 0.0:
            raise ValueError(f"AdamW: invalid eps {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamW: betas must lie in [0, 1), got {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"AdamW: invalid weight_decay {weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter that has a gradient. Each line of the formulas above is one `_foreach`
        call over all of a group's tensors, not one call per tensor: a LoRA model has hundreds of small tensors,
        and the per-tensor overhead (Python on a CPU, a kernel launch on a GPU) would outweigh the arithmetic."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("AdamW does not support sparse gradients")
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            exp_avgs = [state["exp_avg"] for state in states]
            exp_avg_sqs = [state["exp_avg_sq"] for state in states]

            if weight_decay:  # multiplying by 1 would cost a pass over every tensor
                torch._foreach_mul_(params, 1 - lr * weight_decay)
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

            # Bias corrections per tensor: a parameter that sat out steps (no gradient) has its own step count.
            bias_corrections1 = [1 - beta1 ** state["step"] for state in states]
            bias_corrections2 = [1 - beta2 ** state["step"] for state in states]
            denoms = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denoms, [math.sqrt(bc) for bc in bias_corrections2])
            torch._foreach_add_(denoms, eps)
            torch._foreach_addcdiv_(params, exp_avgs, denoms, [-lr / bc for bc in bias_corrections1])
        return loss

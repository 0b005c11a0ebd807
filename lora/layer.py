"""LoRALinear: a frozen nn.Linear plus a trainable low-rank update (Hu et al. 2021, "LoRA", eq. 3).

    y = x W^T + b + (alpha / r) * dropout(x) A^T B^T        A: (r, in), B: (out, r)

B starts at zero, so a freshly wrapped layer computes exactly what the base layer did.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRALinear(nn.Module):
    """Takes over `base`'s weight and bias Parameters (the same objects, frozen, no copy).

    Because the frozen tensors stay registered as `weight` / `bias`, a wrapped model keeps the
    backbone's state-dict keys (`...q_proj.weight`) and only adds `...q_proj.lora_A` / `lora_B`.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got {r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        self.weight = base.weight.requires_grad_(False)  # (out, in)
        self.bias = base.bias.requires_grad_(False) if base.bias is not None else None
        factory = dict(dtype=base.weight.dtype, device=base.weight.device)
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, **factory))
        # A gets nn.Linear's own init (Kaiming-uniform, a=sqrt(5)); B = 0 makes the update start at 0.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout_p = dropout
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.train(base.training)  # wrapping a linear of an eval-mode model must not switch dropout on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        # The adapter may live in another dtype than the frozen weight (e.g. float32 adapters on
        # a bf16 backbone); under autocast, and in float32, the casts are no-ops.
        u = F.linear(self.dropout(x).to(self.lora_A.dtype), self.lora_A)  # (..., r)
        # out + scaling * u B^T in one fused multiply-add: no separate passes to scale and to add.
        fused = torch.addmm(out.reshape(-1, self.out_features), u.reshape(-1, self.r).to(out.dtype),
                            self.lora_B.t().to(out.dtype), alpha=self.scaling)  # (tokens, out)
        return fused.view_as(out)

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) * B @ A in float32, so merging a bf16 weight rounds only once."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling  # (out, in)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into `weight` in place, for inference or export; a no-op when merged."""
        if self.merged:
            return
        self.weight.copy_((self.weight.float() + self.delta_weight()).to(self.weight.dtype))
        self.merged = True

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, r={self.r}, alpha={self.alpha}, merged={self.merged}")

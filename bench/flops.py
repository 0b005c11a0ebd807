"""Model FLOPs of the tagger and the matmul ceiling they are measured against: the MFU of both benchmarks.

Model FLOPs count the matrix multiplies the model needs, not those an implementation chooses to add (activation
checkpointing's recomputation, padding). Per real token, with L layers, d = heads * head_dim, and T_avg the mean
attended length (the real tokens of its sentence; sum n^2 / sum n over sentences of n tokens):
  linear     2 * P, with P the weights of the blocks' projections (no embedding lookup, no vocabulary
             projection: a tagger never computes it; the 9-label head is left out too, under 0.01% of P);
  attention  4 * L * T_avg * d: q k^T and (attention weights) x v, 2 * T_avg * d FLOPs each, per layer.
Forward = linear + attention. A LoRA training step with a frozen base also runs the backward pass through the
activations: once more each projection (the gradient of its input, none of its frozen weight), twice more
attention (both of its matmuls multiply two activations, and each needs the gradient of both). So train =
2 * linear + 3 * attention: PaLM's count (Chowdhery et al. 2022, appendix B: 6N + 12 L H Q T per token for full
training) less the weight gradients, 2N, of a frozen base.
The adapters' own matmuls are left out, so MFU understates the work a little: r (in + out) FLOPs against in x out
per projection, 1.2% more linear FLOPs for the 1B shape at r 16, 4.6% for SmolLM2-135M.

MFU = achieved model FLOP/s / the matmul ceiling: the FLOP/s of large square matmuls of the same dtype, measured
in the same run on the same device.
"""

from __future__ import annotations

import torch

from bench.timing import time_calls
from model.config import LlamaConfig
from predictor.device import cpu_multiplies_in_bf16


def linear_flops_per_token(config: LlamaConfig) -> int:
    """2 FLOPs (multiply, add) per weight of the blocks' projections: each weight is used once per token."""
    d, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    attention = config.hidden_size * (d + 2 * kv) + d * config.hidden_size  # q, k, v, o
    mlp = 3 * config.hidden_size * config.intermediate_size  # gate, up, down
    return config.num_layers * 2 * (attention + mlp)


def attention_flops_per_token(config: LlamaConfig, mean_attended: float) -> float:
    """q k^T and weights x v: each 2 * attended * d FLOPs per query token and layer."""
    return config.num_layers * 4 * mean_attended * config.num_heads * config.head_dim


def forward_flops_per_token(config: LlamaConfig, mean_attended: float) -> float:
    return linear_flops_per_token(config) + attention_flops_per_token(config, mean_attended)


def train_flops_per_token(config: LlamaConfig, mean_attended: float) -> float:
    """One LoRA step with a frozen base: forward, then backward through the activations only."""
    return 2 * linear_flops_per_token(config) + 3 * attention_flops_per_token(config, mean_attended)


def mean_attended(lengths: list[int]) -> float:
    """The mean number of keys a real token attends to, when each token attends its whole sentence."""
    return sum(n * n for n in lengths) / sum(lengths)


def matmul_ceiling(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of an n x n x n matmul in `dtype` on `device`: the best this device does in that precision.

    n is large enough to keep the device busy and small enough to be quick: 8192 on a GPU, 2048 on a CPU, and 512
    for bf16 on a CPU without bf16 instructions, where a matmul of 2048 would take seconds."""
    if device.type == "cuda":
        n, repeats, warmup = 8192, 20, 3
    elif dtype == torch.bfloat16 and not cpu_multiplies_in_bf16():
        n, repeats, warmup = 512, 2, 1
    else:
        n, repeats, warmup = 2048, 5, 1
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))

    def multiply(_: int) -> None:  # returns nothing: each product's memory is free for the next
        a @ b

    seconds, _ = time_calls(multiply, range(warmup), range(repeats), device)
    return 2 * n**3 * repeats / seconds

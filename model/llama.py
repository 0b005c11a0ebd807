"""The LLaMA decoder stack (Touvron et al. 2023; Llama 3, Grattafiori et al. 2024): pre-norm blocks of
grouped-query attention and a SwiGLU MLP, RMSNorm everywhere, rotary positions.

Module and parameter names follow HF's `LlamaModel` (`layers.0.self_attn.q_proj`, ...), so a checkpoint loads
by stripping its `model.` prefix and LoRA target names mean the same thing here as in PEFT.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.attention import Attend, Attention
from model.config import LlamaConfig
from model.memory_saving import SiluMul
from model.padding_free import RealTokens
from model.rope import RotaryEmbedding


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019). Computed in float32: the mean of squares of
    bf16 activations loses too much precision."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) (Shazeer 2020, "GLU Variants Improve Transformer")."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # SiluMul.apply(g, u) = silu(g) * u, keeping less for backward (model/memory_saving.py).
        return self.down_proj(SiluMul.apply(self.gate_proj(x), self.up_proj(x)))


class Block(nn.Module):
    """x + attn(norm(x)), then + mlp(norm(.)): the pre-norm residual block."""

    def __init__(self, config: LlamaConfig, causal: bool):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, causal)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend) -> torch.Tensor:
        """x (N, C): the batch's N real tokens; cos/sin (N, hd). Returns (N, C)."""
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attend)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary = RotaryEmbedding(config)
        self.layers = nn.ModuleList(Block(config, config.layer_is_causal(i)) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()
        # Recompute each block's activations in the backward pass instead of storing them: memory for time.
        self.activation_checkpointing = False

    def tie_weights(self) -> None:
        """Share the embedding matrix with the output projection when the checkpoint ties them."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                tokens: RealTokens | None = None) -> torch.Tensor:
        """input_ids (B, T) -> final-normed hidden states (B, T, C), zeros at padding. Logits: `self.lm_head(output)`.

        attention_mask (B, T): 1 for real tokens, 0 for padding, which comes after them (right padding), so every
        row's positions are 0..T-1; None when nothing is padded. tokens: the same layout built on the host
        (data.batching's `collate` does), which spares the forward pass reading the mask from the device.
        """
        B, T = input_ids.shape
        position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        # Padding-free: the blocks see the N real tokens only, as (N, C); attention alone mixes tokens within each
        # sentence, inside `tokens.attend` (model/padding_free.py).
        if tokens is None:
            tokens = RealTokens.from_mask(attention_mask, B, T)
        cos, sin = self.rotary(tokens.select(position_ids))  # (N, hd)
        x = self.embed_tokens(tokens.select(input_ids))  # (N, C)
        for block in self.layers:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, cos, sin, tokens.attend, use_reentrant=False)
            else:
                x = block(x, cos, sin, tokens.attend)
        return tokens.scatter(self.norm(x))  # (B, T, C), zeros at padding

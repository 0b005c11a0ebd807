"""The two systems the benchmarks compare on the same batches: ours ("ours") and HF transformers + PEFT ("hf").

The peer is `LlamaForTokenClassification` made bidirectional by `config.is_causal = False`: transformers 5 hands
that flag to every attention call (`merge_with_config_defaults`), so SDPA, eager and flash attention all attend
both ways, padded or not (tests/bench/test_systems.py checks that a token's logits see a later token). It carries
PEFT LoRA r 16 / alpha 32 on all seven projections (dropout 0) and trains its head (`modules_to_save`); PEFT keeps
adapters and head in float32, as we do. Its attention kernel is the one transformers picks by default.

One training step is the same for both: the system's forward and backward (ours: `train.step.forward_backward`,
training's own), then `train.step.update` (gradient norm clipped at 1.0, AdamW, gradients cleared). Losses are
read after the clock stops, so the clock sees what each system's step itself synchronises.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bench.timing import time_calls
from data.batching import Batch
from lora.inject import LLAMA_TARGETS, trainable_parameters
from model.config import LlamaConfig
from predictor.device import autocast
from train.config import TrainConfig
from train.optim import AdamW
from train.step import forward_backward, update

SYSTEMS = ("ours", "hf")
NAMES = {"ours": "ours", "hf": "HF + PEFT"}
CLIP_GRAD_NORM = TrainConfig().clip_grad_norm  # training's: 1.0


def random_hf(config: LlamaConfig, num_labels: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A `LlamaForTokenClassification` of `config`'s shape with random weights, made on `device` in `dtype`.
    The rotary scaling is left out: it changes values, not the work."""
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForTokenClassification

    hf = HFLlamaConfig(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                       intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
                       num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
                       head_dim=config.head_dim, rms_norm_eps=config.rms_norm_eps,
                       max_position_embeddings=config.max_position_embeddings,
                       rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
                       tie_word_embeddings=config.tie_word_embeddings, num_labels=num_labels)
    with torch.device(device):  # initialise on the device: a CPU would take many seconds for 1B weights
        return LlamaForTokenClassification._from_config(hf, dtype=dtype)


def with_lora(base: nn.Module, bf16: bool) -> nn.Module:
    """`base` (a LlamaForTokenClassification) made bidirectional, with our LoRA and a trained head, by PEFT."""
    from peft import LoraConfig, get_peft_model

    base.config.is_causal = False
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(LLAMA_TARGETS),
                      modules_to_save=["score"])
    model = get_peft_model(base, lora)
    if bf16:
        model.base_model.model.score.modules_to_save.float()
    return model


def check_bidirectional(model: nn.Module, vocab_size: int, device: torch.device, bf16: bool) -> None:
    """Raise unless the first token's logits change with the tokens after it: a transformers that ignores
    `config.is_causal` would give a causal peer, and a benchmark of the wrong model."""
    ids = torch.arange(8, device=device)[None] % vocab_size  # (1, 8)
    later = ids.clone()
    later[0, 1:] = (ids[0, 1:] + 1) % vocab_size
    training = model.training
    with torch.no_grad(), autocast(device, bf16):
        first, changed = (model.eval()(input_ids=x).logits[0, 0].float() for x in (ids, later))
    model.train(training)
    if torch.equal(first, changed):
        import transformers

        raise RuntimeError(f"transformers {transformers.__version__} ignores config.is_causal = False: "
                           "the peer attends causally")


def train_step(system: str, model: nn.Module, batch: Batch, bf16: bool) -> torch.Tensor:
    """Forward and backward of one batch; the mean loss over its labelled tokens, where the system leaves it."""
    device = batch.input_ids.device
    if system == "ours":
        loss, _ = forward_backward(model, [batch], device, bf16)
        return loss
    with autocast(device, bf16):
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
    loss.backward()
    return loss.detach()


def tag_batch(system: str, model: nn.Module, batch: Batch) -> torch.Tensor:
    if system == "ours":
        return model(batch.input_ids, batch.attention_mask, batch.tokens)  # the layout the batch built: no wait
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def training_step(system: str, model: nn.Module, bf16: bool) -> Callable[[Batch], torch.Tensor]:
    """One optimizer step on a batch, as a function of the batch: forward, backward, clip, AdamW."""
    trainable = list(trainable_parameters(model).values())
    optimizer = AdamW(trainable, lr=1e-4, weight_decay=0.0)

    def step(batch: Batch) -> torch.Tensor:
        loss = train_step(system, model, batch, bf16)
        update(trainable, optimizer, clip_grad_norm=CLIP_GRAD_NORM)
        return loss

    return step


def time_training(step: Callable[[Batch], torch.Tensor], model: nn.Module, warmup: list[Batch],
                  timed: list[Batch]) -> tuple[float, list[float]]:
    """Seconds of `step` on the timed batches, after the untimed warm-up batches; the timed steps' losses."""
    model.train()
    seconds, losses = time_calls(step, warmup, timed, timed[0].input_ids.device)
    return seconds, [float(loss) for loss in losses]


def time_tagging(system: str, model: nn.Module, warmup: list[Batch], timed: list[Batch], bf16: bool) -> float:
    """Seconds to tag the timed batches in eval mode, after the untimed warm-up batches."""
    device = timed[0].input_ids.device
    model.eval()
    with torch.inference_mode(), autocast(device, bf16):
        seconds, _ = time_calls(lambda batch: tag_batch(system, model, batch), warmup, timed, device)
    return seconds

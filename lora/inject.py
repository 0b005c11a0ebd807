"""Put LoRALinear in place of chosen nn.Linear modules, by attribute name, and freeze the rest.

Only module names are known here: `targets` are attribute names (`q_proj` matches
`layers.3.self_attn.q_proj`), `trainable` / `extra` are name components (`head` matches
`head.weight`, `head.dense.bias`).
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn

from lora.layer import LoRALinear

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoRASummary:
    lora_modules: int
    trainable: int  # parameters that receive gradients: LoRA A/B and the `trainable` modules
    total: int  # every parameter of the model, LoRA included

    def __str__(self) -> str:
        return (f"LoRA in {self.lora_modules} linear layers: {self.trainable:,} trainable of "
                f"{self.total:,} parameters ({100 * self.trainable / self.total:.3f}%)")


def name_matches(name: str, components: Iterable[str]) -> bool:
    """True when one of `components` ("head", "mlp.up_proj") is a whole-component part of `name`."""
    return any(f".{c}." in f".{name}." for c in components)


def lora_modules(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """(qualified name, module) for every LoRALinear in `model`, in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """name -> parameter, for each that needs a gradient: what the optimizer steps, the ranks sum and a checkpoint
    keeps (after `inject_lora`, LoRA's A/B and the `trainable` modules). A shared parameter once, by its first name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module) -> LoRASummary:
    return LoRASummary(
        lora_modules=len(lora_modules(model)),
        trainable=sum(p.numel() for p in trainable_parameters(model).values()),
        total=sum(p.numel() for p in model.parameters()),  # shared parameters are listed once
    )


def inject_lora(
    model: nn.Module,
    targets: Iterable[str] = LLAMA_TARGETS,
    r: int = 16,
    alpha: float = 32,
    dropout: float = 0.0,
    trainable: Iterable[str] = ("head",),
) -> LoRASummary:
    """Wrap every nn.Linear whose attribute name is in `targets`; afterwards only LoRA's A/B and
    the parameters of modules named in `trainable` require grad. Modifies `model` in place."""
    targets, trainable = tuple(targets), tuple(trainable)
    if lora_modules(model):
        raise ValueError(f"{type(model).__name__} already contains LoRALinear modules; inject once")
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = [(name, m) for name, m in linears if name.rpartition(".")[2] in targets]
    unmatched = [t for t in targets if not any(name.rpartition(".")[2] == t for name, _ in chosen)]
    if unmatched:
        sample = ", ".join(name for name, _ in linears[:8]) or "(the model has no nn.Linear)"
        raise ValueError(f"inject_lora: no nn.Linear named {unmatched} in {type(model).__name__} "
                         f"(targets {list(targets)}); its linear layers include: {sample}")
    unmatched = [t for t in trainable if not any(name_matches(n, [t]) for n, _ in model.named_parameters())]
    if unmatched:
        raise ValueError(f"inject_lora: trainable={list(unmatched)} names no parameter of "
                         f"{type(model).__name__}; pass trainable=() to train only LoRA")

    for name, linear in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, attr, LoRALinear(linear, r=r, alpha=alpha, dropout=dropout))

    adapter_params = {id(p) for _, m in lora_modules(model) for p in (m.lora_A, m.lora_B)}
    for name, p in model.named_parameters():
        p.requires_grad_(id(p) in adapter_params or name_matches(name, trainable))
    return count_parameters(model)


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its frozen weight, for tagging (tag/run.py). Returns how many."""
    modules = _require_lora(model)
    for _, m in modules:
        m.merge()
    return len(modules)


def lora_state_dict(model: nn.Module, extra: Iterable[str] = ("head",)) -> dict[str, torch.Tensor]:
    """Only what fine-tuning changed: every `lora_A` / `lora_B` plus the tensors of `extra` modules."""
    _require_lora(model)
    extra = tuple(extra)
    state = model.state_dict()
    unmatched = [e for e in extra if not any(name_matches(k, [e]) for k in state)]
    if unmatched:
        raise ValueError(f"lora_state_dict: extra={unmatched} names no tensor of {type(model).__name__}")
    adapter_keys = {f"{name}.{ab}" for name, _ in lora_modules(model) for ab in ("lora_A", "lora_B")}
    return {k: v for k, v in state.items() if k in adapter_keys or name_matches(k, extra)}


def _require_lora(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    modules = lora_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no LoRALinear modules; call inject_lora first")
    return modules

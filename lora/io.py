"""Save / load a LoRA adapter (A/B of every LoRALinear plus the `extra` head) as a directory:

    adapter.safetensors     the tensors, keyed by their names in the model's state dict
    adapter_config.json     r, alpha, dropout, targets, extra: enough to rebuild the wrapped model

The backbone is not saved: it is whatever checkpoint the adapter was trained on.
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lora.inject import inject_lora, lora_modules, lora_state_dict

WEIGHTS_NAME = "adapter.safetensors"
CONFIG_NAME = "adapter_config.json"


@dataclass(frozen=True)
class AdapterConfig:
    r: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]  # attribute names of the wrapped linears, e.g. ("q_proj", "v_proj")
    extra: tuple[str, ...]  # fully trained modules saved alongside, e.g. ("head",)


def adapter_config(model: nn.Module, extra: tuple[str, ...] = ("head",)) -> AdapterConfig:
    """Read the configuration back from the model's LoRALinear modules (which must agree)."""
    modules = lora_modules(model)
    if not modules:
        raise ValueError(f"{type(model).__name__} has no LoRALinear modules; call inject_lora first")
    settings = {(m.r, m.alpha, m.dropout_p) for _, m in modules}
    if len(settings) != 1:
        raise ValueError(f"LoRA modules of {type(model).__name__} disagree on (r, alpha, dropout): {sorted(settings)}")
    (r, alpha, dropout), = settings
    targets = tuple(dict.fromkeys(name.rpartition(".")[2] for name, _ in modules))
    return AdapterConfig(r=r, alpha=alpha, dropout=dropout, targets=targets, extra=tuple(extra))


def save_adapter(model: nn.Module, directory: str | Path, extra: tuple[str, ...] = ("head",)) -> Path:
    """Write adapter.safetensors + adapter_config.json into `directory` (created if needed)."""
    directory = Path(directory)
    config = adapter_config(model, extra)
    tensors = {k: v.contiguous() for k, v in lora_state_dict(model, extra).items()}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(asdict(config), indent=2) + "\n")
    save_file(tensors, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    return directory


@torch.no_grad()
def load_tensors_into(path: Path, targets: dict[str, torch.Tensor]) -> None:
    """Copy the tensors of a safetensors file into `targets` (name -> tensor of the model), strictly: every name
    present, no name left over, every shape equal. Each failure, a file that is corrupt or cut short too, is a
    ValueError naming the file (and the tensor), so that the command lines report it in one line."""
    try:
        loaded = load_file(path)
    except SafetensorError as e:
        raise ValueError(f"{path}: unreadable safetensors file ({e})") from None
    missing = sorted(targets.keys() - loaded.keys())
    unexpected = sorted(loaded.keys() - targets.keys())
    if missing:
        raise ValueError(f"{path}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")
    if unexpected:
        raise ValueError(f"{path}: unexpected tensor {unexpected[0]!r} "
                         f"({len(unexpected)} the model has no place for)")
    for key, target in targets.items():
        if loaded[key].shape != target.shape:
            raise ValueError(f"{path}: tensor {key!r} has shape {tuple(loaded[key].shape)}, "
                             f"the model expects {tuple(target.shape)}")
    for key, target in targets.items():
        target.copy_(loaded[key])


def read_adapter_config(directory: str | Path) -> AdapterConfig:
    path = Path(directory) / CONFIG_NAME
    data = path.read_bytes()
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = len(data[data.rfind(b"\n", 0, e.start) + 1 : e.start].decode("utf-8")) + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x} at column {column})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
    expected = sorted(f.name for f in fields(AdapterConfig))
    if not isinstance(raw, dict) or sorted(raw) != expected:
        raise ValueError(f"{path}: expected exactly the keys {expected}, got {raw!r}")
    try:
        return AdapterConfig(r=int(raw["r"]), alpha=float(raw["alpha"]), dropout=float(raw["dropout"]),
                             targets=tuple(map(str, raw["targets"])), extra=tuple(map(str, raw["extra"])))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad value in adapter config: {e}") from e


def load_adapter(model: nn.Module, directory: str | Path) -> AdapterConfig:
    """Fill the model's adapter (and extra head) from `directory`, strictly: every key present,
    no key left over, every shape equal. A model without LoRA is first wrapped per the config; a
    wrapped one must agree with it on r, alpha and targets (dropout may differ)."""
    directory = Path(directory)
    config = read_adapter_config(directory)
    if not lora_modules(model):
        inject_lora(model, config.targets, r=config.r, alpha=config.alpha, dropout=config.dropout,
                    trainable=config.extra)
    present = adapter_config(model, config.extra)
    if (present.r, present.alpha, present.targets) != (config.r, config.alpha, config.targets):
        raise ValueError(f"{directory / CONFIG_NAME}: adapter has r={config.r}, alpha={config.alpha}, "
                         f"targets={config.targets} but the model's LoRA has r={present.r}, "
                         f"alpha={present.alpha}, targets={present.targets}")
    merged = [name for name, m in lora_modules(model) if m.merged]
    if merged:
        raise ValueError(f"cannot load an adapter into merged LoRA modules ({merged[0]}, ...); "
                         "load the adapter before merging")

    # state_dict tensors share storage with the parameters, so copying into them fills the model.
    load_tensors_into(directory / WEIGHTS_NAME, lora_state_dict(model, config.extra))
    return config

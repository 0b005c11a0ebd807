"""LoRA (Hu et al. 2021) for any model built from nn.Linear: wrap, freeze, merge, save, load.
Knows only nn.Linear and module names; imports no other room.

layer.py   LoRALinear: out + (alpha / r) * B(A(dropout(x))), merge()
inject.py  wrap the named projections of a model, freeze the rest, list what trains, merge them all
io.py      an adapter folder: adapter.safetensors + adapter_config.json
"""

from lora.inject import (LLAMA_TARGETS, LoRASummary, count_parameters, inject_lora, lora_modules,
                         lora_state_dict, merge_lora, trainable_parameters)
from lora.io import AdapterConfig, load_adapter, read_adapter_config, save_adapter
from lora.layer import LoRALinear

__all__ = [
    "LLAMA_TARGETS", "AdapterConfig", "LoRALinear", "LoRASummary", "count_parameters", "inject_lora",
    "load_adapter", "lora_modules", "lora_state_dict", "merge_lora", "read_adapter_config",
    "save_adapter", "trainable_parameters",
]

"""A run directory holds everything needed to reload a trained tagger:

    run.json               training settings, label list, absolute path of the base checkpoint, code version
    adapter_config.json    LoRA r, alpha, targets (lora/io.py)
    adapter.safetensors    LoRA A/B of every adapted projection + the classification head, best validation F1
    finetuned.safetensors  instead of the adapter, with --finetune full: every trained tensor (backbone and head)
    checkpoint.pt          the latest resumable state (optimizer, schedule, RNG, step)
    metrics.jsonl          one JSON record per logged training step and per evaluation
    curves.png             loss and F1 of training and validation against the step (train/plot.py)
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

from lora.inject import inject_lora
from lora.io import CONFIG_NAME, WEIGHTS_NAME, load_adapter, load_tensors_into, save_adapter, save_tensors
from model import load_llama, load_tokenizer
from model.tagger import Tagger
from train.config import TrainConfig

RUN_FILE = "run.json"
FINETUNED_NAME = "finetuned.safetensors"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_bf16(config: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast on GPUs that have it; float32 on CPUs, where bf16 matmuls are slow without AMX/AVX512-BF16."""
    if config.precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return config.precision == "bf16"


def build_tagger(
    config: TrainConfig, num_labels: int, device: torch.device, with_lora: bool = True,
    load_on: torch.device | None = None,
) -> Tagger:
    """Base checkpoint + head, with LoRA injected and everything but LoRA and head frozen; with `--finetune full`
    no LoRA and every weight trained (the reference LoRA is measured against).

    Under bf16 autocast the frozen base is stored in bf16 (half the memory, and no cast of every weight at every
    step); otherwise in float32. LoRA and the head always stay float32 so small updates are not rounded away.
    `load_on` puts the weights elsewhere than `device`, the one they will run on: FSDP loads on the CPU and
    shards onto the GPUs a model too large for one of them.
    """
    base_dtype = torch.bfloat16 if use_bf16(config, device) else torch.float32
    load_on = load_on or device
    backbone = load_llama(config.model, dtype=base_dtype, device=load_on, causal=config.causal,
                          bidirectional_top_layers=config.bidirectional_top_layers)
    tagger = Tagger(backbone, num_labels, dropout=config.head_dropout).to(load_on)
    if config.finetune == "full":
        # named_parameters lists a tied lm_head once, as embed_tokens; an untied one is unused by a tagger.
        for name, p in tagger.named_parameters():
            p.requires_grad_(not name.startswith("backbone.lm_head."))
        keep_trainable_in_float32(tagger)
    elif with_lora:
        inject_lora(tagger, config.lora_targets, r=config.lora_r, alpha=config.lora_alpha,
                    dropout=config.lora_dropout, trainable=("head",))
        keep_trainable_in_float32(tagger)
    if config.compile:
        compile_blocks(tagger)
    return tagger


def compile_blocks(tagger: Tagger) -> None:
    """torch.compile each transformer block, in place (state-dict keys unchanged), for dynamic shapes: every batch
    has its own length. Per block: the FLOPs are there, and the masks and padding layout stay out of the graph."""
    for block in tagger.backbone.layers:
        block.compile(dynamic=True)


def keep_trainable_in_float32(tagger: Tagger) -> None:
    for p in tagger.parameters():
        if p.requires_grad:
            p.data = p.data.float()


def tuned_files(config: TrainConfig) -> tuple[str, ...]:
    """The files of a run directory that hold what training changed."""
    return (FINETUNED_NAME,) if config.finetune == "full" else (CONFIG_NAME, WEIGHTS_NAME)


def save_tuned(tagger: Tagger, run_dir: Path, config: TrainConfig) -> None:
    """Keep what training changed: the LoRA adapter and head, or with --finetune full every trained tensor."""
    if config.finetune != "full":
        save_adapter(tagger, run_dir)
        return
    tensors = {name: p.detach().contiguous() for name, p in tagger.named_parameters() if p.requires_grad}
    save_tensors(run_dir / FINETUNED_NAME, tensors)


def load_tuned(tagger: Tagger, run_dir: Path, config: TrainConfig) -> None:
    """Fill `tagger` (built by build_tagger without LoRA) from what save_tuned wrote, strictly."""
    if config.finetune != "full":
        load_adapter(tagger, run_dir)
        return
    params = {name: p for name, p in tagger.named_parameters() if p.requires_grad}
    load_tensors_into(run_dir / FINETUNED_NAME, params)


def code_version() -> str | None:
    """The git commit of this code, with "-dirty" when tracked files differ from it, so that a result in a run
    directory can be traced back to the code that made it; None outside a git checkout or without git."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def write_run_info(run_dir: Path, config: TrainConfig, labels: list[str]) -> None:
    info = {"config": config.to_json(), "labels": labels, "model": str(Path(config.model).resolve()),
            "code": code_version()}
    tmp = run_dir / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, run_dir / RUN_FILE)


@dataclass
class LoadedRun:
    tagger: Tagger
    tokenizer: object
    config: TrainConfig
    labels: list[str]
    device: torch.device


def load_run(run_dir: str | Path, device: str = "auto", model: str | None = None) -> LoadedRun:
    """Rebuild the trained tagger of a run directory (in eval mode). `model` overrides the base checkpoint path."""
    run_dir = Path(run_dir)
    info_path = run_dir / RUN_FILE
    if not info_path.exists():
        raise FileNotFoundError(f"{info_path}: not a run directory (no {RUN_FILE})")
    info = json.loads(info_path.read_text())
    config = TrainConfig.from_saved({**info["config"], "model": model or info["model"]})
    for name in tuned_files(config):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name}: missing; the run has not finished an evaluation yet")
    resolved = resolve_device(device)
    tagger = build_tagger(config, len(info["labels"]), resolved, with_lora=False)
    load_tuned(tagger, run_dir, config)
    keep_trainable_in_float32(tagger)
    return LoadedRun(tagger.eval(), load_tokenizer(config.model), config, list(info["labels"]), resolved)

"""Training and tagging speed of our LoRA tagger against HF transformers + PEFT on one accelerator, one table.

    python -m bench.gpu [--device cuda] [--shapes llama-3.2-1b,smollm2-135m] [--budgets 2048,8192,32768]
                        [--systems ours,ours-compiled,hf] [--steps 10] [--warmup 2] [--peak-tflops 989] [--json PATH]
                                                                                              (make bench-gpu)

Every cell of shape x token budget x system runs in its own subprocess, so its peak memory is its own. On a CPU
the defaults are the `tiny` shape and budgets of 256 and 1024 tokens: the same table in seconds, for the tests.

The models are what `python -m train` fine-tunes, built from a preset shape with random weights instead of a
checkpoint (speed does not depend on the values; seeded): the frozen base in bf16 on a GPU (float32 on a CPU without
bf16 instructions unless `--precision bf16`), bf16 autocast, bidirectional attention, LoRA r 16 / alpha 32 on all
seven projections (dropout 0), a 9-label head, LoRA and head in float32. Ours is `model.Llama` + `lora`, eager, or
with each block compiled (`ours-compiled`: train.build.compile_blocks; its warm-up steps compile); the peer is
transformers' `LlamaForTokenClassification` + PEFT (bench/systems.py).

Sentences are random token ids with CoNLL-2003 lengths: drawn by inverse CDF from `CONLL_LENGTH_QUANTILES`, the
quantiles of its training sentences in Llama 3 tokens with BOS. `LABELLED_FRACTION` of the positions after BOS
carry a random label, as the first subtoken of each word does. How close the draws come to the data:
docs/performance.md#on-a-gpu-make-bench-gpu. A step holds as many sentences as fit the token budget (rows x longest
row, `data.batching.bucketed_plan(max_tokens=...)`, all sentences sorted by length before batching, so padding is
small); both systems get the very same batches, collated and moved to the device before the clock starts.

A training step is bench/systems.py's: the system's forward and backward, then gradient norm clipped at 1.0 and
AdamW. The clock (bench/timing.py) starts after the warm-up steps and waits for the GPU at both ends. After the
timed steps, one more step is run under torch.profiler to count the ATen operators it dispatches, and on a GPU one
more under `torch.cuda.set_sync_debug_mode` to count the times it makes the host wait (bench/host.py). A compiled
step's count includes its fused kernels, which are not ATen operators.

Model FLOPs and MFU are `bench/flops.py`'s: per real token, forward = 2 x the blocks' projection weights + 4 x
layers x mean attended length x heads x head_dim; a LoRA training step with a frozen base = 2 x the linear part
+ 3 x the attention part. MFU = achieved model FLOP/s / the matmul ceiling of the run's dtype measured in the same
run on the same device, and, given `--peak-tflops`, / that stated peak (H100 SXM bf16 dense: 989). Activation
checkpointing (`--activation-checkpointing`, ours only) recomputes each block's forward in the backward pass; those
FLOPs are not model FLOPs, so they lower the MFU, as they should.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch._inductor import config as inductor_config

from bench.flops import forward_flops_per_token, matmul_ceiling, mean_attended, train_flops_per_token
from bench.host import dispatched_ops, host_syncs
from bench.systems import (NAMES, SYSTEMS, check_bidirectional, random_hf, time_tagging, time_training, training_step,
                           with_lora)
from data.align import Example
from data.batching import Batch, bucketed_plan, collate
from lora.inject import LLAMA_TARGETS, count_parameters, inject_lora
from model.config import PRESETS, LlamaConfig
from model.llama import Llama
from model.tagger import IGNORE_INDEX, Tagger
from predictor.build import keep_trainable_in_float32
from predictor.device import use_bf16
from train.build import compile_blocks

ROOT = Path(__file__).resolve().parents[1]

# A 2-layer model with grouped-query attention, small enough for a CPU test to train in seconds.
TINY = LlamaConfig(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                   intermediate_size=128, rope_theta=10000.0, max_position_embeddings=256)
CONFIGS: dict[str, LlamaConfig] = {"llama-3.2-1b": PRESETS["llama-3.2-1b"],
                                   "smollm2-135m": PRESETS["smollm2-135m"], "tiny": TINY}

# (cumulative probability, tokens) of CoNLL-2003 train sentence lengths, Llama 3 tokenizer, BOS included.
CONLL_LENGTH_QUANTILES = (
    (0.0, 2), (0.05, 5), (0.1, 8), (0.2, 10), (0.3, 12), (0.4, 15), (0.5, 17), (0.6, 20), (0.7, 25),
    (0.8, 31), (0.9, 39), (0.95, 45), (0.99, 56), (0.999, 73), (1.0, 170),
)
LABELLED_FRACTION = 0.7  # words per token in CoNLL-2003 (docs/performance.md#on-a-gpu-make-bench-gpu)
NUM_LABELS = 9  # a CoNLL-2003-sized head: O and B-/I- for four types
LONGEST = CONLL_LENGTH_QUANTILES[-1][1]
# (shapes, token budgets per step) when --shapes / --budgets are not given
DEFAULTS = {"cuda": (["llama-3.2-1b", "smollm2-135m"], [2048, 8192, 32768]), "cpu": (["tiny"], [256, 1024])}
# The cells' systems: bench/systems.py's, and ours with compiled blocks, which trains and tags as ours does.
CELL_SYSTEMS = (*SYSTEMS, "ours-compiled")
CELL_NAMES = {**NAMES, "ours-compiled": "ours, compiled"}


def conll_like_lengths(count: int, rng: np.random.Generator) -> list[int]:
    """`count` sentence lengths drawn from CoNLL-2003's length distribution (inverse CDF, linear between quantiles)."""
    probabilities, tokens = zip(*CONLL_LENGTH_QUANTILES)
    return np.rint(np.interp(rng.random(count), probabilities, tokens)).astype(int).tolist()


def synthetic_examples(lengths: list[int], vocab_size: int, rng: np.random.Generator) -> list[Example]:
    """Random token ids; BOS-like position 0 unlabelled, a random label on about 70% of the other positions."""
    examples = []
    for s, n in enumerate(lengths):
        ids = rng.integers(0, vocab_size, n).tolist()
        labelled = [t for t in range(1, n) if rng.random() < LABELLED_FRACTION]
        labels = [IGNORE_INDEX] * n
        for t in labelled:
            labels[t] = int(rng.integers(0, NUM_LABELS))
        examples.append(Example(ids, labels, labelled, [(s, w) for w in range(len(labelled))]))
    return examples


def build_random_tagger(config: LlamaConfig, device: torch.device, base_dtype: torch.dtype) -> Tagger:
    """A bidirectional Llama of `config`'s shape with random weights, frozen in `base_dtype`, with LoRA r 16 /
    alpha 32 on all seven projections and a 9-label head, both trainable in float32 (as `train.build.build_tagger`)."""
    with torch.device(device):  # initialise on the device: a CPU would take many seconds for 1B weights
        backbone = Llama(config.replace(causal=False))
    backbone.to(device)  # the rotary table is built on the CPU on purpose
    for p in backbone.parameters():  # not Module.to(dtype): that would round the float32 rotary table too
        p.data = p.data.to(base_dtype)
    tagger = Tagger(backbone, NUM_LABELS, dropout=0.1).to(device)
    inject_lora(tagger, LLAMA_TARGETS, r=16, alpha=32, dropout=0.0, trainable=("head",))
    keep_trainable_in_float32(tagger)
    return tagger


def mean_conll_length() -> float:
    """The mean of the length distribution `conll_like_lengths` draws from (before rounding)."""
    return sum((p1 - p0) * (t0 + t1) / 2 for (p0, t0), (p1, t1) in zip(CONLL_LENGTH_QUANTILES,
                                                                        CONLL_LENGTH_QUANTILES[1:]))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def resolve(device_arg: str, parser: argparse.ArgumentParser) -> torch.device:
    try:
        device = torch.device(device_arg)
    except RuntimeError as e:
        parser.error(f"--device {device_arg}: {e}")
    if device.type == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        parser.error(f"--device {device_arg}: CUDA is not available (torch {torch.__version__} is {build}, "
                     f"{torch.cuda.device_count()} GPUs visible); run on a GPU machine or pass --device cpu")
    if device.type not in ("cuda", "cpu"):
        parser.error(f"--device {device_arg}: only cuda and cpu are supported")
    return device


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Bytes at the peak so far, and what they measure."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"


def synthetic_batches(config: LlamaConfig, budget: int, count: int, seed: int, device: torch.device) -> list[Batch]:
    """`count` batches of random CoNLL-like sentences of at most `budget` token slots each, on the device.

    The sentences, about a quarter more than `count` budgets hold, are sorted by length into batches in one chunk
    (rows of a batch all but equally long); the first `count` batches of the shuffled plan are kept."""
    rng = np.random.default_rng(seed)
    lengths = conll_like_lengths(math.ceil(1.25 * count * budget / mean_conll_length()), rng)
    examples = synthetic_examples(lengths, config.vocab_size, rng)
    plan = bucketed_plan(lengths, max_tokens=budget, seed=seed, chunk_size=len(lengths))
    if len(plan) < count:
        raise RuntimeError(f"{len(lengths)} sentences made {len(plan)} batches of {budget} tokens, not {count}")
    return [collate(examples, batch, pad_id=0).to(device) for batch in plan[:count]]


def build(system: str, config: LlamaConfig, args: argparse.Namespace, device: torch.device,
          bf16: bool) -> torch.nn.Module:
    """The system's tagger of `config`'s shape with random weights (seeded), base in bf16 or float32."""
    torch.manual_seed(args.seed)
    dtype = torch.bfloat16 if bf16 else torch.float32
    if system == "hf":
        model = with_lora(random_hf(config, NUM_LABELS, device, dtype), bf16)
        check_bidirectional(model, config.vocab_size, device, bf16)
        return model
    tagger = build_random_tagger(config, device, dtype)
    tagger.backbone.activation_checkpointing = args.activation_checkpointing
    if system == "ours-compiled":
        compile_blocks(tagger)
    return tagger


# Compiling happens in the cell's first steps; with this setting the profiler sees each fused CPU kernel, as it sees
# every Triton kernel on a GPU (bench/host.py). Patched for the cell alone, not for the process that calls it.
@inductor_config.patch({"cpp.enable_kernel_profile": True})
def measure(shape: str, budget: int, system: str, args: argparse.Namespace, device: torch.device) -> dict:
    """One cell of the table: build `system` in `shape`, train on the timed batches, count one step's operators
    (and host syncs on a GPU), then tag the timed batches; tokens/s and model FLOP/s of both, peak memory."""
    started = time.perf_counter()
    config = CONFIGS[shape]
    bf16 = use_bf16(args.precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = build(system, config, args, device, bf16)
    parameters = count_parameters(model)
    batches = synthetic_batches(config, budget, args.warmup + args.steps, args.seed, device)
    warmup, timed = batches[: args.warmup], batches[args.warmup :]

    runs_as = "ours" if system == "ours-compiled" else system
    step = training_step(runs_as, model, bf16)
    train_seconds, losses = time_training(step, model, warmup, timed)
    if not all(math.isfinite(loss) for loss in losses):
        raise RuntimeError(f"{system}: training loss is not finite: {losses}")
    memory, memory_kind = peak_memory(device)
    ops = dispatched_ops(lambda: step(timed[0]))
    syncs = host_syncs(lambda: step(timed[0])) if device.type == "cuda" else None
    tag_seconds = time_tagging(runs_as, model, timed[:2], timed, bf16)

    lengths = [n for b in timed for n in b.tokens.lengths]  # the real tokens of each row, known on the host
    attended, real_tokens = mean_attended(lengths), sum(lengths)
    return {
        "shape": shape, "budget": budget, "system": system, "precision": "bf16" if bf16 else "float32",
        "attention": model.config._attn_implementation if system == "hf" else "sdpa (ours)",
        "steps": len(timed), "warmup_steps": len(warmup),
        "parameters": parameters.total, "trainable_parameters": parameters.trainable,
        "real_tokens": real_tokens, "padded_tokens": sum(b.input_ids.numel() for b in timed),
        "mean_attended": attended,
        "forward_flops_per_token": forward_flops_per_token(config, attended),
        "train_flops_per_token": train_flops_per_token(config, attended),
        "train_tokens_per_s": real_tokens / train_seconds, "tag_tokens_per_s": real_tokens / tag_seconds,
        "ops_per_step": ops, "syncs_per_step": syncs,
        "peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
        "first_loss": losses[0], "last_loss": losses[-1], "wall_seconds": time.perf_counter() - started,
    }


def run_cell(shape: str, budget: int, system: str, args: argparse.Namespace) -> dict:
    """`measure` in a fresh process; a cell that fails or runs past `--cell-timeout` is a record with its error."""
    command = [sys.executable, "-m", "bench.gpu", "--worker", shape, str(budget), system, "--device", args.device,
               "--precision", args.precision, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--seed", str(args.seed), *(["--activation-checkpointing"] if args.activation_checkpointing else [])]
    cell = {"shape": shape, "budget": budget, "system": system}
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=args.cell_timeout)
    except subprocess.TimeoutExpired:
        return {**cell, "error": f"timed out after {args.cell_timeout:.0f} s"}
    if done.returncode:
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        print(f"{shape} / {budget} / {system} failed:\n{done.stderr[-4000:]}", file=sys.stderr)
        return {**cell, "error": last}
    print(f"measured {shape} / {budget} tokens / {system}", file=sys.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def add_ratios_and_mfu(records: list[dict], ceiling: float, peak: float | None) -> None:
    """MFU of each measured cell, and ours against HF + PEFT in the same shape and budget."""
    for r in records:
        if "error" in r:
            continue
        for what, flops in (("train", "train_flops_per_token"), ("tag", "forward_flops_per_token")):
            achieved = r[flops] * r[f"{what}_tokens_per_s"]
            r[f"{what}_mfu"], r[f"{what}_mfu_peak"] = achieved / ceiling, achieved / peak if peak else None
    hf = {(r["shape"], r["budget"]): r for r in records if r["system"] == "hf" and "error" not in r}
    for r in records:
        ref = hf.get((r["shape"], r["budget"]))
        for what in ("train", "tag"):
            ok = ref is not None and "error" not in r
            r[f"{what}_x_hf"] = r[f"{what}_tokens_per_s"] / ref[f"{what}_tokens_per_s"] if ok else None


def markdown_table(records: list[dict]) -> str:
    """One row per cell: shape, budget, system; speed, MFU, ours / HF, peak memory, operators and syncs per step."""
    def number(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    def mfu(r: dict, what: str) -> str:
        stated = f" / {r[f'{what}_mfu_peak']:.1%}" if r[f"{what}_mfu_peak"] is not None else ""
        return f"{r[f'{what}_mfu']:.1%}{stated}"

    lines = ["| shape | tokens/step (real) | system | train tok/s | train MFU | tag tok/s | tag MFU | train x HF | "
             "tag x HF | peak memory | ops/step | syncs/step |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        cell = f"| {r['shape']} | {r['budget']:,}"
        if "error" in r:
            lines.append(f"{cell} | {CELL_NAMES[r['system']]} | failed: {r['error'][:120]} |" + " |" * 8)
            continue
        lines.append(
            f"{cell} ({r['real_tokens'] / r['steps']:,.0f}) | {CELL_NAMES[r['system']]} | "
            f"{r['train_tokens_per_s']:,.0f} | "
            f"{mfu(r, 'train')} | {r['tag_tokens_per_s']:,.0f} | {mfu(r, 'tag')} | {number(r['train_x_hf'], '.2f')} | "
            f"{number(r['tag_x_hf'], '.2f')} | {r['peak_memory_bytes'] / 2**30:.2f} GiB | {r['ops_per_step']:,} | "
            f"{number(r['syncs_per_step'], ',')} |")
    return "\n".join(lines)


def summary(device: torch.device, precision: str, ceiling: float, peak: float | None, records: list[dict]) -> str:
    """The lines above the table: the machine, the versions, what the memory and MFU columns are measured against."""
    import peft
    import transformers

    measured = [r for r in records if "error" not in r]
    attention = sorted({r["attention"] for r in measured if r["system"] == "hf"})
    memory = measured[0]["peak_memory_kind"] if measured else "-"
    stated = f", stated peak {peak / 1e12:,.0f} TFLOP/s (MFU: ceiling / stated peak)" if peak else ""
    steps = f"{measured[0]['steps']} timed steps after {measured[0]['warmup_steps']} warm-up" if measured else ""
    return (f"{device_name(device)} ({device.type}), torch {torch.__version__}, "
            f"transformers {transformers.__version__}, peft {peft.__version__}; {precision}; "
            f"HF attention: {', '.join(attention) or '-'}; {steps}\n"
            f"matmul ceiling {ceiling / 1e12:.4g} TFLOP/s ({precision}, measured){stated}; peak memory: {memory}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--shapes", type=lambda s: s.split(","),
                        help=f"comma-separated, of {', '.join(CONFIGS)}; default: {DEFAULTS['cuda'][0]} on a GPU, "
                             f"{DEFAULTS['cpu'][0]} on a CPU ('tiny' is a 2-layer model for tests)")
    parser.add_argument("--budgets", type=lambda s: [int(b) for b in s.split(",")],
                        help=f"token slots per training step, comma-separated; default: {DEFAULTS['cuda'][1]} on a "
                             f"GPU, {DEFAULTS['cpu'][1]} on a CPU")
    parser.add_argument("--systems", type=lambda s: s.split(","), default=list(SYSTEMS),
                        help="comma-separated, of ours, ours-compiled (each block torch.compiled) and hf "
                             "(HF transformers + PEFT); default: ours,hf")
    parser.add_argument("--precision", choices=("auto", "float32", "bf16"), default="auto",
                        help="auto: bf16 on a GPU or a CPU with bf16 instructions, else float32")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per cell")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training steps before the clock starts")
    parser.add_argument("--activation-checkpointing", action="store_true", help="ours only")
    parser.add_argument("--peak-tflops", type=float, help="stated dense peak of the device in the run's precision")
    parser.add_argument("--cell-timeout", type=float, default=600, help="seconds one cell may take")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the records to this JSON file")
    parser.add_argument("--worker", nargs=3, metavar=("SHAPE", "BUDGET", "SYSTEM"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = resolve(args.device, parser)
    if args.worker:
        shape, budget, system = args.worker
        print(json.dumps(measure(shape, int(budget), system, args, device)))
        return 0
    shapes = args.shapes or DEFAULTS[device.type][0]
    budgets = args.budgets or DEFAULTS[device.type][1]
    check(args, shapes, budgets, parser)

    bf16 = use_bf16(args.precision, device)
    ceiling = matmul_ceiling(device, torch.bfloat16 if bf16 else torch.float32)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the ceiling's matrices: the cells get the whole device
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    records = [run_cell(shape, budget, system, args)
               for shape in shapes for budget in budgets for system in args.systems]
    add_ratios_and_mfu(records, ceiling, peak)
    print(summary(device, "bf16" if bf16 else "float32", ceiling, peak, records))
    print(markdown_table(records))
    if args.json:
        Path(args.json).write_text(json.dumps({"matmul_ceiling_flops": ceiling, "peak_flops": peak,
                                               "device": device_name(device), "cells": records}, indent=2) + "\n")
    return 1 if any("error" in r for r in records) else 0


def check(args: argparse.Namespace, shapes: list[str], budgets: list[int], parser: argparse.ArgumentParser) -> None:
    """One clear line for a bad flag, before any cell runs."""
    if unknown := [s for s in shapes if s not in CONFIGS]:
        parser.error(f"--shapes: unknown shape {unknown[0]!r}; known: {', '.join(CONFIGS)}")
    if unknown := [s for s in args.systems if s not in CELL_SYSTEMS]:
        parser.error(f"--systems: unknown system {unknown[0]!r}; known: {', '.join(CELL_SYSTEMS)}")
    if short := [b for b in budgets if b < LONGEST]:
        parser.error(f"--budgets: {short[0]} is under {LONGEST}, the longest sentence; a step must hold one")
    if args.steps < 1 or args.warmup < 0:
        parser.error(f"need --steps >= 1 and --warmup >= 0; got {args.steps}, {args.warmup}")


if __name__ == "__main__":
    sys.exit(main())

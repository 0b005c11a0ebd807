"""Training and tagging speed of the LoRA tagger on one accelerator, with random weights: no checkpoint, no data.

    python -m bench.gpu [--config llama-3.2-1b] [--device cuda] [--precision auto] [--batch-size 32]
                        [--steps 300] [--peak-tflops 989] [--json PATH]

The model is what `python -m train` fine-tunes, built from a preset shape instead of a checkpoint: the frozen base
in bf16 on a GPU (float32 on a CPU unless `--precision bf16`), bf16 autocast, SDPA attention, bidirectional
(`causal=False`), LoRA r 16 / alpha 32 on all seven projections (dropout 0), and a 9-label head; LoRA and head
in float32. Weights keep PyTorch's module defaults (seeded): speed does not depend on their values.

Sentences are random token ids with CoNLL-2003 lengths: drawn by inverse CDF from `CONLL_LENGTH_QUANTILES`, the
quantiles of its training sentences in Llama 3 tokens with BOS. `LABELLED_FRACTION` of the positions after BOS
carry a random label, as the first subtoken of each word does. How close the draws come to the data:
docs/performance.md#on-a-gpu-make-bench-gpu.
Sentences are bucketed by length into batches of `--batch-size` (`data.batching.bucketed_plan`), collated and
moved to the device before the clock starts, so the timings are the model's alone.

A training step is training's own: `train.step.forward_backward`, then `train.step.update` (gradient norm clipped at
1.0, AdamW), so the clock sees what training pays, the labelled-token count and the loss it reads back from the
device each step included. The clock (bench/timing.py) starts after the warm-up steps and waits for the GPU at
both ends.

Model FLOPs and MFU are `bench/flops.py`'s: per real token, forward = 2 x the blocks' projection weights + 4 x
layers x mean attended length x heads x head_dim; a LoRA training step with a frozen base = 2 x the linear part
+ 3 x the attention part. MFU = achieved model FLOP/s / the matmul ceiling of the run's dtype measured in the same
run on the same device, and, given `--peak-tflops`, / that stated peak (H100 SXM bf16 dense: 989).

Activation checkpointing recomputes each block's forward in the backward pass; those FLOPs are not model FLOPs,
so they lower the MFU, as they should.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.flops import forward_flops_per_token, matmul_ceiling, mean_attended, train_flops_per_token
from bench.timing import time_calls
from data.align import Example
from data.batching import Batch, bucketed_plan, collate
from lora.inject import LLAMA_TARGETS, count_parameters, inject_lora, trainable_parameters
from model.config import PRESETS, LlamaConfig
from model.llama import Llama
from model.tagger import IGNORE_INDEX, Tagger
from predictor.build import keep_trainable_in_float32
from train.build import compile_blocks
from train.config import TrainConfig
from predictor.device import autocast, use_bf16
from train.optim import AdamW
from train.step import forward_backward, update

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


def synthetic_batches(args: argparse.Namespace, config: LlamaConfig, device: torch.device) -> list[Batch]:
    """`--warmup` + `--steps` bucketed batches of random CoNLL-like sentences, already on the device."""
    rng = np.random.default_rng(args.seed)
    lengths = conll_like_lengths(args.batch_size * (args.warmup + args.steps), rng)
    examples = synthetic_examples(lengths, config.vocab_size, rng)
    plan = bucketed_plan(lengths, batch_size=args.batch_size, seed=args.seed)
    return [collate(examples, batch, pad_id=0).to(device) for batch in plan]


def time_training(tagger: Tagger, warmup: list[Batch], timed: list[Batch], bf16: bool) -> tuple[float, list[float]]:
    """Seconds of the timed training steps (after the untimed warm-up steps), and their losses."""
    device = tagger.head.weight.device
    trainable = list(trainable_parameters(tagger).values())
    optimizer = AdamW(trainable, lr=1e-4, weight_decay=0.0)

    def train_step(batch: Batch) -> float:
        loss, _ = forward_backward(tagger, [batch], device, bf16)
        update(trainable, optimizer, clip_grad_norm=TrainConfig().clip_grad_norm)
        return float(loss)

    tagger.train()
    seconds, losses = time_calls(train_step, warmup, timed, device)
    if not all(math.isfinite(loss) for loss in losses):
        raise RuntimeError(f"training loss is not finite: {losses}")
    return seconds, losses


def time_tagging(tagger: Tagger, batches: list[Batch], bf16: bool) -> float:
    """Seconds to tag `batches` in eval mode, after two untimed batches (eval mode may pick other kernels)."""
    device = tagger.head.weight.device

    def tag(batch: Batch) -> None:
        with autocast(device, bf16):
            tagger(batch.input_ids, batch.attention_mask)

    tagger.eval()
    with torch.inference_mode():
        seconds, _ = time_calls(tag, batches[:2], batches, device)
    return seconds


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Bytes at the peak so far, and what they measure."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"


def run(args: argparse.Namespace, device: torch.device) -> dict:
    """Build the random tagger, time training on the timed batches, then tagging them; report speed and MFU."""
    started = time.perf_counter()
    config = CONFIGS[args.config]
    bf16 = use_bf16(args.precision, device)
    ceiling = matmul_ceiling(device, torch.bfloat16 if bf16 else torch.float32)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(args.seed)
    tagger = build_random_tagger(config, device, torch.bfloat16 if bf16 else torch.float32)
    tagger.backbone.activation_checkpointing = args.activation_checkpointing
    if args.compile:
        compile_blocks(tagger)
    parameters = count_parameters(tagger)

    batches = synthetic_batches(args, config, device)
    warmup, timed = batches[: args.warmup], batches[args.warmup : args.warmup + args.steps]
    train_seconds, losses = time_training(tagger, warmup, timed, bf16)
    memory, memory_kind = peak_memory(device)
    tag_seconds = time_tagging(tagger, timed, bf16)

    lengths = [int(n) for b in timed for n in b.attention_mask.sum(1).tolist()]
    attended, real_tokens = mean_attended(lengths), sum(lengths)
    train_flops = train_flops_per_token(config, attended) * real_tokens / train_seconds
    tag_flops = forward_flops_per_token(config, attended) * real_tokens / tag_seconds
    peak = args.peak_tflops * 1e12 if args.peak_tflops else None
    return {
        "device": device_name(device), "device_type": device.type, "torch": torch.__version__,
        "config": args.config, "precision": "bf16" if bf16 else "float32", "batch_size": args.batch_size,
        "steps": len(timed), "warmup_steps": len(warmup),
        "activation_checkpointing": args.activation_checkpointing, "compile": args.compile,
        "parameters": parameters.total, "trainable_parameters": parameters.trainable,
        "real_tokens": real_tokens, "padded_tokens": sum(b.input_ids.numel() for b in timed),
        "mean_length": real_tokens / len(lengths), "mean_attended": attended,
        "forward_flops_per_token": forward_flops_per_token(config, attended),
        "train_flops_per_token": train_flops_per_token(config, attended),
        "matmul_ceiling_flops": ceiling, "peak_flops": peak,
        "train_tokens_per_s": real_tokens / train_seconds,
        "train_mfu": train_flops / ceiling, "train_mfu_peak": train_flops / peak if peak else None,
        "tag_tokens_per_s": real_tokens / tag_seconds,
        "tag_mfu": tag_flops / ceiling, "tag_mfu_peak": tag_flops / peak if peak else None,
        "peak_memory_bytes": memory, "peak_memory_kind": memory_kind,
        "first_loss": losses[0], "last_loss": losses[-1],
        "wall_seconds": time.perf_counter() - started,
    }


def markdown_table(result: dict) -> str:
    def mfu(key: str) -> str:
        return f"{result[key]:.1%}" if result[key] is not None else "-"

    model = (f"{result['config']} ({result['parameters'] / 1e6:,.1f}M parameters, "
             f"{result['trainable_parameters'] / 1e6:,.2f}M trainable)")
    options = [name for name, on in (("activation checkpointing", result["activation_checkpointing"]),
                                     ("torch.compile", result["compile"])) if on]
    batch = (f"{result['batch_size']} sentences, mean {result['mean_length']:.1f} tokens, "
             f"{result['real_tokens'] / result['padded_tokens']:.0%} real")
    rows = [
        ("device", f"{result['device']} ({result['device_type']})"),
        ("torch", result["torch"]),
        ("config", model),
        ("precision", ", ".join([result["precision"], *options])),
        ("batch", batch),
        ("matmul ceiling", f"{result['matmul_ceiling_flops'] / 1e12:.3g} TFLOP/s ({result['precision']}, measured)"),
        ("train tokens/s", f"{result['train_tokens_per_s']:,.0f}"),
        ("train MFU (measured ceiling / stated peak)", f"{mfu('train_mfu')} / {mfu('train_mfu_peak')}"),
        ("tag tokens/s", f"{result['tag_tokens_per_s']:,.0f}"),
        ("tag MFU (measured ceiling / stated peak)", f"{mfu('tag_mfu')} / {mfu('tag_mfu_peak')}"),
        ("peak memory", f"{result['peak_memory_bytes'] / 2**30:.2f} GiB ({result['peak_memory_kind']})"),
        ("wall time", f"{result['wall_seconds']:.0f} s in all, {result['steps']} timed training steps"),
    ]
    return "\n".join(["| metric | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="llama-3.2-1b",
                        help="model shape; 'tiny' is a 2-layer model for tests")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--precision", choices=("auto", "float32", "bf16"), default="auto",
                        help="auto: bf16 on a GPU that supports it, float32 on a CPU")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per training step")
    parser.add_argument("--steps", type=int, default=300, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=10, help="untimed training steps before the clock starts")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile each transformer block")
    parser.add_argument("--peak-tflops", type=float, help="stated dense peak of the device in the run's precision")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0:
        parser.error(f"need --batch-size >= 1, --steps >= 1, --warmup >= 0; got {args.batch_size}, {args.steps}, "
                     f"{args.warmup}")
    device = resolve(args.device, parser)

    result = run(args, device)
    print(markdown_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

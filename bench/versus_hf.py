"""Side-by-side speed and memory: our tagger against HF transformers + PEFT, same machine, same run.

    python -m bench.versus_hf [--sentences 256] [--batch-size 16] [--model DIR] [--bf16 auto|on|off]   (make bench)

Both systems fine-tune the same checkpoint as a bidirectional token classifier with LoRA r 16 / alpha 32 on all
seven projections (dropout 0) and tag the same sentences: a seeded sample of the real CoNLL-2003 training
sentences ($CONLL_DIR, else ../shared/data/conll2003 beside the checkout). Each system runs in its own
subprocess so its peak memory is its own. Batching:
  padded    random batches of `batch_size` sentences padded to their longest, as the seed project did; both
            systems get identical tensors;
  bucketed  ours: sentences sorted into length buckets, so batches carry little padding.
Ours is also measured with activation checkpointing ("recompute": each block's activations recomputed in the
backward pass instead of stored), the option for memory over speed.

The two systems and their training step are bench/systems.py's (training's own step for ours, then the same
update: gradient norm clipped at 1.0, AdamW), timed by the same clock (bench/timing.py) after WARMUP_STEPS untimed
steps. Model FLOPs and MFU are `bench/flops.py`'s: per real token, forward = 2 x the blocks' projection weights + 4 x
layers x mean attended length x heads x head_dim; a LoRA step with a frozen base = 2 x the linear part + 3 x the
attention part. MFU = achieved model FLOP/s / the matmul ceiling of the same precision measured in the same run.

bf16 (measured when the CPU has bf16 matmul instructions, AVX512-BF16 or AMX, or with --bf16 on): both systems
again with the frozen base stored in bf16 and every step under bf16 autocast, LoRA and head in float32. Its
accuracy cost is read from our mean training loss over the same steps against float32.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from bench.flops import forward_flops_per_token, matmul_ceiling, mean_attended, train_flops_per_token
from bench.systems import time_tagging, time_training, training_step, with_lora
from data.align import build_examples
from data.batching import Batch, Plan, bucketed_plan, collate
from data.conll import Sentence, read_conll
from data.labels import LabelSet
from model import LlamaConfig, load_tokenizer
from model.tagger import Tagger
from predictor.device import cpu_multiplies_in_bf16
from train.build import build_tagger
from train.config import DEFAULT_MODEL, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONLL = ROOT.parent / "shared" / "data" / "conll2003"
CPU = torch.device("cpu")
WARMUP_STEPS = 2  # untimed training steps on the first batches


def load_sentences(count: int, seed: int) -> tuple[list[Sentence], str]:
    """A seeded sample of `count` CoNLL-2003 training sentences, and where they came from."""
    conll = Path(os.environ.get("CONLL_DIR", DEFAULT_CONLL))
    sentences = read_conll(conll / "train.txt")
    return random.Random(seed).sample(sentences, count), f"{count} CoNLL-2003 training sentences ({conll})"


def conll_labels() -> LabelSet:
    """CoNLL-2003's label set, as a run learns it from the training file."""
    return LabelSet.from_types(["PER", "ORG", "LOC", "MISC"])


def padded_plan(n: int, batch_size: int, seed: int) -> Plan:
    """Random batches, as the seed project made them: each padded to its longest sentence by `collate`."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[k : k + batch_size] for k in range(0, n, batch_size)]


def build_batches(args: argparse.Namespace, batching: str) -> tuple[list[Batch], list[int]]:
    """The sampled sentences as batches ("padded" or "bucketed"), and each sentence's length in tokens."""
    tokenizer = load_tokenizer(args.model)
    sentences, _ = load_sentences(args.sentences, args.seed)
    examples = build_examples(sentences, tokenizer, 256, labels=conll_labels())
    lengths = [len(e.input_ids) for e in examples]
    if batching == "padded":
        plan = padded_plan(len(examples), args.batch_size, args.seed)
    else:
        plan = bucketed_plan(lengths, batch_size=args.batch_size, seed=args.seed)
    return [collate(examples, batch, tokenizer.pad_id) for batch in plan], lengths


def build_ours(model_dir: str, precision: str, memory: str) -> Tagger:
    tagger = build_tagger(TrainConfig(model=model_dir, lora_dropout=0.0, precision=precision), len(conll_labels()), CPU)
    tagger.backbone.activation_checkpointing = memory == "recompute"
    return tagger


def build_hf(model_dir: str, bf16: bool) -> nn.Module:
    from transformers import LlamaForTokenClassification

    base = LlamaForTokenClassification.from_pretrained(model_dir, num_labels=len(conll_labels()),
                                                       dtype=torch.bfloat16 if bf16 else torch.float32)
    return with_lora(base, bf16)


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(system: str, batching: str, precision: str, memory: str, args: argparse.Namespace) -> dict:
    """Train on every batch once, then tag every sentence; report tokens/s and peak memory of this process.
    precision bf16: the frozen base stored in bf16 and every step under bf16 autocast; LoRA and head float32.
    memory "recompute": activation checkpointing, each block's activations recomputed in the backward pass."""
    torch.manual_seed(0)
    bf16 = precision == "bf16"
    batches, lengths = build_batches(args, batching)
    model = build_ours(args.model, precision, memory) if system == "ours" else build_hf(args.model, bf16)
    rss_loaded = current_rss()
    train_seconds, losses = time_training(training_step(system, model, bf16), model, batches[:WARMUP_STEPS], batches)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tag_seconds = time_tagging(system, model, [], batches, bf16)  # right after training, no warm-up
    real = sum(b.tokens.count for b in batches)
    return {"system": system, "batching": batching, "precision": precision, "memory": memory,
            "real_tokens": real, "slots": sum(b.input_ids.numel() for b in batches),
            "train_tokens_per_s": real / train_seconds, "tag_tokens_per_s": real / tag_seconds,
            "peak_rss": peak_rss, "rss_after_load": rss_loaded, "mean_loss": sum(losses) / len(losses),
            "mean_attended": mean_attended(lengths)}


def run_workers(args: argparse.Namespace, measured: list[tuple[str, str, str, str]]) -> list[dict]:
    """Each variant's worker record, each worker in a fresh process: its peak memory is its own."""
    runs = []
    for variant in measured:
        command = [sys.executable, "-m", "bench.versus_hf", "--model", args.model, "--sentences", str(args.sentences),
                   "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--worker", *variant]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"the {' / '.join(variant)} worker failed ({done.returncode}):\n{done.stderr[-4000:]}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print("measured " + " / ".join(variant), file=sys.stderr)
    return runs


def print_table(config: LlamaConfig, runs: list[dict], ceilings: dict[str, float]) -> None:
    """One row per run; speed and memory also as a ratio to HF + PEFT (padded) in the same precision."""
    hf = {run["precision"]: run for run in runs if run["system"] == "hf"}
    attended = hf["float32"]["mean_attended"]
    forward, train = forward_flops_per_token(config, attended), train_flops_per_token(config, attended)
    print("matmul ceiling " + ", ".join(f"{p} {c / 1e9:.0f} GFLOP/s" for p, c in ceilings.items())
          + f"; model forward {forward / 1e6:.0f} MFLOP per real token, training step {train / 1e6:.0f} MFLOP")
    print("x HF: against HF + PEFT (padded) in the same precision; MFU: against that precision's ceiling\n")
    header = (f"{'system':<40}{'real/slots':>11}{'train tok/s':>13}{'x HF':>7}{'train MFU':>11}"
              f"{'tag tok/s':>11}{'x HF':>7}{'peak RSS':>10}{'x HF':>7}{'train +RSS':>11}{'loss':>8}")
    print(header)
    print("-" * len(header))
    for run in runs:
        ref = hf[run["precision"]]
        name = {"hf": "HF + PEFT", "ours": "ours"}[run["system"]] + f" ({run['batching']}, {run['precision']}"
        name += ", recompute)" if run["memory"] == "recompute" else ")"
        print(f"{name:<40}{run['real_tokens'] / run['slots']:>11.0%}{run['train_tokens_per_s']:>13.0f}"
              f"{run['train_tokens_per_s'] / ref['train_tokens_per_s']:>7.2f}"
              f"{train * run['train_tokens_per_s'] / ceilings[run['precision']]:>11.1%}"
              f"{run['tag_tokens_per_s']:>11.0f}{run['tag_tokens_per_s'] / ref['tag_tokens_per_s']:>7.2f}"
              f"{run['peak_rss'] / 2**30:>9.2f}G{run['peak_rss'] / ref['peak_rss']:>7.2f}"
              f"{(run['peak_rss'] - run['rss_after_load']) / 2**30:>10.2f}G{run['mean_loss']:>8.4f}")


def print_bf16_cost(runs: list[dict]) -> None:
    """The accuracy cost of bf16: the same batches in the same order from the same initial weights."""
    f32, b16 = (next(r for r in runs if r["system"] == "ours" and r["batching"] == "bucketed"
                     and r["precision"] == p and r["memory"] == "store") for p in ("float32", "bf16"))
    change = (b16["mean_loss"] - f32["mean_loss"]) / f32["mean_loss"]
    print(f"\nbf16 accuracy: ours' mean training loss over the same steps {b16['mean_loss']:.4f} in bf16, "
          f"{f32['mean_loss']:.4f} in float32 ({change:+.1%})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.versus_hf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="also measure both systems in bf16 (auto: when this CPU has bf16 matmul instructions)")
    parser.add_argument("--worker", nargs=4, metavar=("SYSTEM", "BATCHING", "PRECISION", "MEMORY"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return 0

    _, source = load_sentences(args.sentences, args.seed)
    ceilings = {"float32": matmul_ceiling(CPU, torch.float32)}
    measured = [("hf", "padded", "float32", "store"), ("ours", "padded", "float32", "store"),
                ("ours", "bucketed", "float32", "store"), ("ours", "bucketed", "float32", "recompute")]
    with_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and cpu_multiplies_in_bf16())
    if with_bf16:
        ceilings["bf16"] = matmul_ceiling(CPU, torch.bfloat16)
        measured += [("hf", "padded", "bf16", "store"), ("ours", "bucketed", "bf16", "store")]
    runs = run_workers(args, measured)

    print(f"\n{source}, batch {args.batch_size} sentences, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print_table(LlamaConfig.from_hf(args.model), runs, ceilings)
    if with_bf16:
        print_bf16_cost(runs)
    elif args.bf16 == "off":
        print("\nbf16: skipped (--bf16 off)")
    else:
        print(f"\nbf16: skipped, this CPU has no bf16 matmul instructions "
              f"(bf16 matmul ceiling {matmul_ceiling(CPU, torch.bfloat16) / 1e9:.1f} GFLOP/s); "
              f"--bf16 on measures it anyway")
    return 0


if __name__ == "__main__":
    sys.exit(main())

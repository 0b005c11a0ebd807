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

Model FLOPs per real token (stated so MFU can be checked): forward 2 * P + 4 * L * T_avg * d, with P the
parameters of the linear layers of the blocks (no embedding lookup, no vocabulary projection), L layers,
d = heads * head_dim, T_avg the mean attended length (real tokens of its sentence). A LoRA training step with a
frozen base runs forward + backward-through-activations = 2 x forward (weight gradients of the small adapters
ignored). MFU = achieved model FLOP/s / the matmul ceiling of the same precision measured in the same run.

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
import time
from pathlib import Path

import torch

from data.align import build_examples
from data.batching import bucketed_plan, collate
from data.conll import read_conll
from data.labels import LABELS
from model import LlamaConfig, load_tokenizer
from train.config import DEFAULT_MODEL, TrainConfig
from train.device import autocast
from train.optim import AdamW

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_CONLL = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"


def matmul_ceiling(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matmul: what this CPU can do at best."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def cpu_has_bf16() -> bool:
    capability = torch.backends.cpu.get_cpu_capability()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags or capability in ("AVX512_BF16", "AMX")


def load_sentences(count: int, seed: int):
    conll = Path(os.environ.get("CONLL_DIR", DEFAULT_CONLL))
    sentences = read_conll(conll / "train.txt")
    return random.Random(seed).sample(sentences, count), f"{count} CoNLL-2003 training sentences ({conll})"


def forward_flops_per_token(config: LlamaConfig, mean_attended: float) -> float:
    d, kv = config.num_heads * config.head_dim, config.num_kv_heads * config.head_dim
    qkvo = config.hidden_size * (d + 2 * kv) + d * config.hidden_size
    gate_up_down = 3 * config.hidden_size * config.intermediate_size
    linear = qkvo + gate_up_down  # weights per layer, each used once per token
    return config.num_layers * (2 * linear + 4 * mean_attended * d)


def padded_plan(n: int, batch_size: int, seed: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[k : k + batch_size] for k in range(0, n, batch_size)]


def worker(system: str, batching: str, precision: str, memory: str, args: argparse.Namespace) -> dict:
    """Train on every batch once, then tag every sentence; report tokens/s and peak memory of this process.
    precision bf16: the frozen base stored in bf16 and every step under bf16 autocast; LoRA and head float32.
    memory "recompute": activation checkpointing, each block's activations recomputed in the backward pass."""
    torch.manual_seed(0)
    bf16 = precision == "bf16"
    tokenizer = load_tokenizer(args.model)
    sentences, _ = load_sentences(args.sentences, args.seed)
    examples = build_examples(sentences, tokenizer, 256)
    lengths = [len(e.input_ids) for e in examples]
    if batching == "padded":
        plan = padded_plan(len(examples), args.batch_size, args.seed)
    else:
        plan = bucketed_plan(lengths, batch_size=args.batch_size, seed=args.seed)
    batches = [collate(examples, batch, tokenizer.pad_id) for batch in plan]

    if system == "ours":
        from train.build import build_tagger

        model = build_tagger(TrainConfig(model=args.model, lora_dropout=0.0, precision=precision), len(LABELS),
                             torch.device("cpu"))
        model.backbone.activation_checkpointing = memory == "recompute"

        def loss_of(batch):
            return model.loss(batch.input_ids, batch.labels, batch.attention_mask)

        def logits_of(batch):
            return model(batch.input_ids, batch.attention_mask)
    else:
        from peft import LoraConfig, get_peft_model
        from transformers import LlamaForTokenClassification

        base = LlamaForTokenClassification.from_pretrained(args.model, num_labels=len(LABELS),
                                                           dtype=torch.bfloat16 if bf16 else torch.float32)
        base.config.is_causal = False
        # PEFT keeps the adapters (and the saved copy of the head) in float32 by default, as we do.
        model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                                modules_to_save=["score"]))
        if bf16:
            model.base_model.model.score.modules_to_save.float()

        def loss_of(batch):
            mask = (batch.attention_mask > 0).long()
            return model(input_ids=batch.input_ids, attention_mask=mask, labels=batch.labels).loss

        def logits_of(batch):
            return model(input_ids=batch.input_ids, attention_mask=(batch.attention_mask > 0).long()).logits

    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    rss_loaded = current_rss()
    model.train()
    for batch in batches[:2]:  # warm-up, not timed
        with autocast(torch.device("cpu"), bf16):
            loss_of(batch).backward()
        optimizer.zero_grad(set_to_none=True)
    real = sum(int((b.attention_mask > 0).sum()) for b in batches)
    slots = sum(b.input_ids.numel() for b in batches)
    start = time.perf_counter()
    losses = []
    for batch in batches:
        with autocast(torch.device("cpu"), bf16):
            loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    train_seconds = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    model.eval()
    start = time.perf_counter()
    with torch.inference_mode(), autocast(torch.device("cpu"), bf16):
        for batch in batches:
            logits_of(batch)
    tag_seconds = time.perf_counter() - start
    return {"system": system, "batching": batching, "precision": precision, "memory": memory,
            "real_tokens": real, "slots": slots,
            "train_tokens_per_s": real / train_seconds, "tag_tokens_per_s": real / tag_seconds,
            "peak_rss": peak_rss, "rss_after_load": rss_loaded, "mean_loss": sum(losses) / len(losses),
            "mean_attended": sum(n * n for n in lengths) / sum(lengths)}


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


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
    ceilings = {"float32": matmul_ceiling()}
    measured = [("hf", "padded", "float32", "store"), ("ours", "padded", "float32", "store"),
                ("ours", "bucketed", "float32", "store"), ("ours", "bucketed", "float32", "recompute")]
    with_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and cpu_has_bf16())
    if with_bf16:
        ceilings["bf16"] = matmul_ceiling(torch.bfloat16)
        measured += [("hf", "padded", "bf16", "store"), ("ours", "bucketed", "bf16", "store")]
    runs = []
    for variant in measured:
        command = [sys.executable, "-m", "bench.versus_hf", "--model", args.model, "--sentences", str(args.sentences),
                   "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--worker", *variant]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
        print("measured " + " / ".join(variant), file=sys.stderr)

    config = LlamaConfig.from_hf(args.model)
    hf = {run["precision"]: run for run in runs if run["system"] == "hf"}
    flops = forward_flops_per_token(config, hf["float32"]["mean_attended"])
    print(f"\n{source}, batch {args.batch_size} sentences, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("matmul ceiling " + ", ".join(f"{p} {c / 1e9:.0f} GFLOP/s" for p, c in ceilings.items())
          + f"; model forward {flops / 1e6:.0f} MFLOP per real token")
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
              f"{2 * flops * run['train_tokens_per_s'] / ceilings[run['precision']]:>11.1%}"
              f"{run['tag_tokens_per_s']:>11.0f}{run['tag_tokens_per_s'] / ref['tag_tokens_per_s']:>7.2f}"
              f"{run['peak_rss'] / 2**30:>9.2f}G{run['peak_rss'] / ref['peak_rss']:>7.2f}"
              f"{(run['peak_rss'] - run['rss_after_load']) / 2**30:>10.2f}G{run['mean_loss']:>8.4f}")
    if with_bf16:
        # The accuracy cost of bf16: the same batches in the same order from the same initial weights.
        f32, b16 = (next(r for r in runs if r["system"] == "ours" and r["batching"] == "bucketed"
                         and r["precision"] == p and r["memory"] == "store") for p in ("float32", "bf16"))
        change = (b16["mean_loss"] - f32["mean_loss"]) / f32["mean_loss"]
        print(f"\nbf16 accuracy: ours' mean training loss over the same steps {b16['mean_loss']:.4f} in bf16, "
              f"{f32['mean_loss']:.4f} in float32 ({change:+.1%})")
    else:
        print(f"\nbf16: skipped, this CPU has no bf16 matmul instructions "
              f"(bf16 matmul ceiling {matmul_ceiling(torch.bfloat16, n=512, repeats=1) / 1e9:.1f} GFLOP/s); "
              f"--bf16 on measures it anyway")
    return 0


if __name__ == "__main__":
    sys.exit(main())

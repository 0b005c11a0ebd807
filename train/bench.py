"""Side-by-side speed and memory: our tagger against HF transformers + PEFT, same machine, same run.

    python -m train.bench [--sentences 256] [--batch-size 16] [--model DIR]      (make bench)

Both systems fine-tune the same checkpoint as a bidirectional token classifier with LoRA r 16 / alpha 32 on all
seven projections (dropout 0) and tag the same sentences: real CoNLL-2003 training sentences when the data is
found, else sentences with CoNLL-like lengths made of real words. Each system runs in its own subprocess so its
peak memory is its own. Batching:
  padded    random batches of `batch_size` sentences padded to their longest, as the seed project did; both
            systems get identical tensors;
  bucketed  ours: sentences sorted into length buckets, so batches carry little padding.

Model FLOPs per real token (stated so MFU can be checked): forward 2 * P + 4 * L * T_avg * d, with P the
parameters of the linear layers of the blocks (no embedding lookup, no vocabulary projection), L layers,
d = heads * head_dim, T_avg the mean attended length (real tokens of its sentence). A LoRA training step with a
frozen base runs forward + backward-through-activations = 2 x forward (weight gradients of the small adapters
ignored). MFU = achieved model FLOP/s / the float32 matmul ceiling measured in the same run.
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
    linear = config.hidden_size * (d + 2 * kv) + d * config.hidden_size + 3 * config.hidden_size * config.intermediate_size
    return config.num_layers * (2 * linear + 4 * mean_attended * d)


def padded_plan(n: int, batch_size: int, seed: int) -> list[list[list[int]]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [[[i] for i in order[k : k + batch_size]] for k in range(0, n, batch_size)]


def worker(system: str, batching: str, args: argparse.Namespace) -> dict:
    """Train on every batch once, then tag every sentence; report tokens/s and peak memory of this process."""
    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.model)
    sentences, _ = load_sentences(args.sentences, args.seed)
    examples = build_examples(sentences, tokenizer, 256)
    lengths = [len(e.input_ids) for e in examples]
    if batching == "padded":
        plan = padded_plan(len(examples), args.batch_size, args.seed)
    else:
        plan = bucketed_plan(lengths, batch_size=args.batch_size, seed=args.seed)
    batches = [collate(examples, rows, tokenizer.pad_id) for rows in plan]

    if system == "ours":
        from train.run import build_tagger

        model = build_tagger(TrainConfig(model=args.model, lora_dropout=0.0), len(LABELS), torch.device("cpu"))

        def loss_of(batch):
            return model.loss(batch.input_ids, batch.labels, batch.attention_mask, batch.position_ids)

        def logits_of(batch):
            return model(batch.input_ids, batch.attention_mask, batch.position_ids)
    else:
        from peft import LoraConfig, get_peft_model
        from transformers import LlamaForTokenClassification

        base = LlamaForTokenClassification.from_pretrained(args.model, num_labels=len(LABELS), dtype=torch.float32)
        base.config.is_causal = False
        model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                                modules_to_save=["score"]))

        def loss_of(batch):
            mask = (batch.attention_mask > 0).long()
            return model(input_ids=batch.input_ids, attention_mask=mask, labels=batch.labels).loss

        def logits_of(batch):
            return model(input_ids=batch.input_ids, attention_mask=(batch.attention_mask > 0).long()).logits

    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    rss_loaded = current_rss()
    model.train()
    for batch in batches[:2]:  # warm-up, not timed
        loss_of(batch).backward()
        optimizer.zero_grad(set_to_none=True)
    real = sum(int((b.attention_mask > 0).sum()) for b in batches)
    slots = sum(b.input_ids.numel() for b in batches)
    start = time.perf_counter()
    losses = []
    for batch in batches:
        loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    train_seconds = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            logits_of(batch)
    tag_seconds = time.perf_counter() - start
    return {"system": system, "batching": batching, "real_tokens": real, "slots": slots,
            "train_tokens_per_s": real / train_seconds, "tag_tokens_per_s": real / tag_seconds,
            "peak_rss": peak_rss, "rss_after_load": rss_loaded, "mean_loss": sum(losses) / len(losses),
            "mean_attended": sum(n * n for n in lengths) / sum(lengths)}


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=2, metavar=("SYSTEM", "BATCHING"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return 0

    _, source = load_sentences(args.sentences, args.seed)
    ceiling = matmul_ceiling()
    runs = []
    for system, batching in (("hf", "padded"), ("ours", "padded"), ("ours", "bucketed")):
        command = [sys.executable, "-m", "train.bench", "--model", args.model, "--sentences", str(args.sentences),
                   "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--worker", system, batching]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
        print(f"measured {system} / {batching}", file=sys.stderr)

    config = LlamaConfig.from_hf(args.model)
    hf = runs[0]
    flops = forward_flops_per_token(config, hf["mean_attended"])
    print(f"\n{source}, batch {args.batch_size} sentences, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"float32 matmul ceiling {ceiling / 1e9:.0f} GFLOP/s; model forward {flops / 1e6:.0f} MFLOP per real token\n")
    header = (f"{'system':<22}{'real/slots':>11}{'train tok/s':>13}{'x HF':>7}{'train MFU':>11}"
              f"{'tag tok/s':>11}{'x HF':>7}{'peak RSS':>10}{'x HF':>7}{'train +RSS':>11}{'loss':>8}")
    print(header)
    print("-" * len(header))
    for run in runs:
        name = {"hf": "HF + PEFT", "ours": "ours"}[run["system"]] + f" ({run['batching']})"
        print(f"{name:<22}{run['real_tokens'] / run['slots']:>11.0%}{run['train_tokens_per_s']:>13.0f}"
              f"{run['train_tokens_per_s'] / hf['train_tokens_per_s']:>7.2f}"
              f"{2 * flops * run['train_tokens_per_s'] / ceiling:>11.1%}{run['tag_tokens_per_s']:>11.0f}"
              f"{run['tag_tokens_per_s'] / hf['tag_tokens_per_s']:>7.2f}{run['peak_rss'] / 2**30:>9.2f}G"
              f"{run['peak_rss'] / hf['peak_rss']:>7.2f}"
              f"{(run['peak_rss'] - run['rss_after_load']) / 2**30:>10.2f}G{run['mean_loss']:>8.4f}")
    if cpu_has_bf16():
        print("\nbf16: this CPU has bf16 instructions; a bf16 comparison is not implemented yet")
    else:
        print(f"\nbf16: skipped, this CPU has no bf16 matmul instructions "
              f"(bf16 matmul ceiling {matmul_ceiling(torch.bfloat16, n=512, repeats=1) / 1e9:.1f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

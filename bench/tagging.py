"""Tagging speed as users meet it: our API, our predict command and Hugging Face's token-classification pipeline
on our own merged export of the same run, on the same texts, one after the other on this machine.

    python -m bench.tagging --run RUN_DIR --data FILE [--limit N]

Texts are the sentences of FILE (a CoNLL file), each joined by spaces and tagged alone, one per line:
  api        `load_tagger(run, int8=False).tag(texts)` in this process, after loading (LoRA merged into the weights);
  api, int8  the same with int8 linear layers (tag/quantize.py), on a CPU with int8 dot-product instructions only;
  predict    `python -m tag.predict --run RUN_DIR` as a whole process, the texts on stdin, JSON lines out (its
             default: float32);
  pipeline   `transformers.pipeline("token-classification", aggregation_strategy="first", batch_size=16)` on
             `tag.export --format merged` of the run, as a whole process, the same texts.
Whole processes include starting Python and loading the model, as a user's command does. Cold start is the time from
starting `tag.predict` with one text to its first JSON line. MFU: our model FLOPs (bench/flops.py, forward only, over
the real tokens of each text's window) per second of the float32 API's tagging, against the float32 matmul
ceiling measured in the same run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.flops import forward_flops_per_token, matmul_ceiling, mean_attended
from data.conll import read_conll
from tag import load_tagger, quantize
from tag.export import export_run

PIPELINE = """
import sys, transformers
model = transformers.AutoModelForTokenClassification.from_pretrained(sys.argv[1])
tokenizer = transformers.AutoTokenizer.from_pretrained(sys.argv[1])
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
tagger = transformers.pipeline("token-classification", model=model, tokenizer=tokenizer,
                               aggregation_strategy="first", batch_size=16, device="cpu")
texts = open(sys.argv[2], encoding="utf-8").read().splitlines()
print(sum(len(found) for found in tagger(texts)))
"""


def timed(command: list[str], stdin: Path | None = None) -> tuple[float, str]:
    """Wall seconds of a whole process, and its standard output."""
    start = time.perf_counter()
    with open(stdin or "/dev/null", "rb") as f:
        done = subprocess.run(command, stdin=f, capture_output=True, check=True)
    return time.perf_counter() - start, done.stdout.decode()


def cold_start(run: Path) -> float:
    """Seconds from starting `tag.predict` with one text to its first JSON line."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "tag.predict", "--run", str(run),
                                "Peter Blackburn met EU officials in Brussels ."], stdout=subprocess.PIPE)
    process.stdout.readline()
    seconds = time.perf_counter() - start
    process.wait()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tagging", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--data", required=True, help="a CoNLL file: its sentences are the texts")
    parser.add_argument("--limit", type=int, help="only the first N sentences")
    args = parser.parse_args(argv)
    texts = [" ".join(s.words) for s in read_conll(args.data)[: args.limit]]
    with tempfile.TemporaryDirectory() as tmp:
        lines = Path(tmp) / "texts.txt"
        lines.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        merged = export_run(args.run, Path(tmp) / "merged", "merged")

        seconds: dict[str, float] = {}
        systems = (("api", False), ("api, int8", True)) if quantize.int8_is_fast() is True else (("api", False),)
        for name, int8 in systems:
            tagger = load_tagger(args.run, device="cpu", int8=int8)
            start = time.perf_counter()
            found = tagger.tag(texts)
            seconds[name] = time.perf_counter() - start
        lengths = [len(tagger.predictor.tokenizer.encode(" " + t, bos=False)) + 1 for t in texts]  # + BOS
        config = tagger.predictor.tagger.backbone.config
        del tagger
        seconds["predict"], out = timed([sys.executable, "-m", "tag.predict", "--run", str(args.run)], stdin=lines)
        assert len(out.splitlines()) == len(texts), "predict dropped a line"
        seconds["pipeline"], _ = timed([sys.executable, "-c", PIPELINE, str(merged), str(lines)])
        cold = cold_start(args.run)
    ceiling = matmul_ceiling(torch.device("cpu"), torch.float32)
    flops = forward_flops_per_token(config, mean_attended(lengths))
    tokens = sum(lengths)
    print(f"{len(texts)} texts from {args.data}, {tokens} tokens, {sum(map(len, found))} entities (API, {name}); "
          f"{torch.get_num_threads()} threads; float32 matmul ceiling {ceiling / 1e9:.0f} GFLOP/s")
    print(f"{'':10} {'seconds':>8} {'texts/s':>8} {'tokens/s':>9} {'x pipeline':>11} {'MFU':>6}")
    for name, time_taken in seconds.items():
        mfu = f"{tokens * flops / time_taken / ceiling:6.1%}" if name == "api" else ""  # a float32 ceiling
        print(f"{name:10} {time_taken:8.1f} {len(texts) / time_taken:8.1f} {tokens / time_taken:9.0f} "
              f"{seconds['pipeline'] / time_taken:10.2f}x {mfu:>6}")
    print(f"cold start of tag.predict (process start to the first JSON line of one text): {cold:.1f} s")
    if len(systems) == 1:
        print("api, int8: not measured, this CPU has no int8 dot-product instructions (tag/quantize.py)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

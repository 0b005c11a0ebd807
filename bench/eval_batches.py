"""Evaluation speed by batch budget: the same windows scored in batches of several padded-token budgets
(`--eval-max-tokens` of a run), one budget after the other on this machine, with the results checked equal.

    python -m bench.eval_batches --run RUN_DIR --data FILE [--budgets 8192 2048 1024] [--limit N]

Every view of FILE (data/views.py: documents, alone, bare) is tagged by
the predictor that training's evaluations and `tag/` share (predictor/predictor.py), with the run's LoRA kept
apart from the weights as training evaluates it. Tokens/s counts real tokens; ratios are against the first budget.
Why budgets matter on a CPU, most likely: a batch of 8,192 padded tokens carries a 50 MB activation per MLP
projection, far beyond the caches, where a batch of 2,048 keeps more of each layer's work in them.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from data.conll import read_conll
from data.views import views
from tag.run import load_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_batches", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a trained run directory")
    parser.add_argument("--data", required=True, help="a CoNLL file with gold tags (its views are tagged)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[8192, 2048, 1024],
                        help="padded tokens per batch; the first is the reference")
    parser.add_argument("--limit", type=int, help="only the first N sentences")
    args = parser.parse_args(argv)
    run = load_run(args.run, merge=False)
    sentences = read_conll(args.data, labels=run.labels)[: args.limit]
    print(f"{len(sentences)} sentences from {args.data}, run {args.run}, budgets {args.budgets}")
    print(f"{'view':<10} {'budget':>7} {'tokens':>8} {'seconds':>8} {'tokens/s':>9} {'ratio':>6}")
    for name, view in views(sentences).items():
        examples = run.windows(view)
        tokens = sum(len(e.input_ids) for e in examples)
        first: tuple[float, list[list[list[float]]]] | None = None  # the first budget's seconds and predictions
        for budget in args.budgets:
            start = time.perf_counter()
            budgeted = dataclasses.replace(run, settings=dataclasses.replace(run.settings, max_tokens=budget))
            scores = budgeted.score_windows(examples, budgeted.plan(examples)).log_probs
            predicted = [scores[i] for i in range(len(examples))]
            seconds = time.perf_counter() - start
            if first is None:
                first = (seconds, predicted)
            else:
                check_same(first[1], predicted, f"{name} view at budget {budget}")
            print(f"{name:<10} {budget:>7} {tokens:>8} {seconds:>8.1f} {tokens / seconds:>9.0f} "
                  f"{first[0] / seconds:>5.2f}x", flush=True)
    return 0


def check_same(expected: list[list[list[float]]], got: list[list[list[float]]], what: str, tol: float = 1e-3) -> None:
    """Batching must not change a prediction: padding never reaches a real token (bidirectional attention)."""
    worst = max((abs(a - b) for e, g in zip(expected, got) for pe, pg in zip(e, g) for a, b in zip(pe, pg)),
                default=0.0)
    if len(expected) != len(got) or worst > tol:
        raise AssertionError(f"{what}: log-probabilities differ from the first budget's by {worst:.2e}")


if __name__ == "__main__":
    raise SystemExit(main())

"""Do the entity scores rank? Precision of a run's predicted entities by score band, and the AUROC of the score
for right against wrong entities, on a CoNLL file with gold tags.

    python -m bench.confidence --run RUN_DIR --data FILE

Each predicted entity (type, first word, last word) is right when the gold tags hold exactly that entity. The
score is data/confidence.py's span marginal, the one `tag.load_tagger(...).tag()` and predict report. Scored in
the views of data/views.py: as documents, and each sentence alone (how the API and predict see a text).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from data.confidence import entity_scores
from data.conll import read_conll
from data.metrics import chunks
from data.views import once_per_view, views
from tag.run import load_run

BANDS = ((0.9, 1.0), (0.5, 0.9), (0.0, 0.5))


def auroc(right: list[float], wrong: list[float]) -> float:
    """P(score of a random right entity > that of a random wrong one), ties counted half (Mann-Whitney U)."""
    if not right or not wrong:
        return float("nan")
    scores = np.concatenate([right, wrong])
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="mergesort")
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    u = ranks[: len(right)].sum() - len(right) * (len(right) + 1) / 2
    return float(u / (len(right) * len(wrong)))


def right_and_wrong(gold: list[list[str]], tags: list[list[str]], log_probs, labels) -> tuple[list[float], list[float]]:
    right, wrong = [], []
    for gold_tags, predicted, rows in zip(gold, tags, log_probs):
        truth = set(chunks(gold_tags))
        spans = chunks(predicted)
        for span, score in zip(spans, entity_scores(np.asarray(rows), labels, spans)):
            (right if span in truth else wrong).append(score)
    return right, wrong


def report(name: str, right: list[float], wrong: list[float]) -> str:
    total = len(right) + len(wrong)
    lines = [f"{name}: {total} predicted entities, {len(right)} right, AUROC {auroc(right, wrong):.3f}"]
    for low, high in BANDS:
        r = sum(low <= s < high or (high == 1.0 and s == 1.0) for s in right)
        w = sum(low <= s < high or (high == 1.0 and s == 1.0) for s in wrong)
        precision = f"{100 * r / (r + w):.1f}" if r + w else "-"
        closing = "]" if high == 1.0 else ")"
        share = 100 * (r + w) / max(1, total)
        lines.append(f"  score in [{low}, {high}{closing}: {r + w:5d} entities ({share:4.1f} %), precision {precision}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.confidence", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", required=True, help="CoNLL file with gold tags")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    run = load_run(args.run, device=args.device)
    sentences = read_conll(args.data, labels=run.labels)
    chosen = {view: found for view, found in views(sentences).items() if view != "bare"}
    results = once_per_view(chosen, lambda view, found: run.tag(found, progress=f"{args.data}, {view}"))
    for view, result in results.items():
        right, wrong = right_and_wrong([s.tags for s in chosen[view]], result.tags, result.log_probs,
                                       run.labels.labels)
        print(report(f"{view} (F1 {result.scores.f1:.2f})", right, wrong))
    return 0


if __name__ == "__main__":
    sys.exit(main())

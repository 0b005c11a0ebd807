"""bench/confidence.py: the AUROC against counting every (right, wrong) pair, and the bands' precision."""

import itertools
import math
import random

from bench.confidence import auroc, report, right_and_wrong


def test_auroc_counts_pairs_with_ties_as_half():
    rng = random.Random(0)
    for _ in range(20):
        right = [rng.choice([0.1, 0.5, 0.7, 0.9, 1.0]) for _ in range(rng.randint(1, 9))]
        wrong = [rng.choice([0.1, 0.3, 0.5, 0.9]) for _ in range(rng.randint(1, 9))]
        pairs = [1.0 if r > w else 0.5 if r == w else 0.0 for r, w in itertools.product(right, wrong)]
        assert math.isclose(auroc(right, wrong), sum(pairs) / len(pairs))
    assert math.isnan(auroc([0.5], []))


def test_right_and_wrong_and_the_report():
    labels = ["O", "B-X", "I-X"]
    certain = [[0.0, -50.0, -50.0], [-50.0, 0.0, -50.0], [-50.0, -50.0, 0.0]]  # O B-X I-X, almost surely
    right, wrong = right_and_wrong([["O", "B-X", "I-X"], ["O", "O", "B-X"]], [["O", "B-X", "I-X"]] * 2,
                                   [certain, certain], labels)
    assert len(right) == len(wrong) == 1 and right[0] > 0.99
    text = report("documents", [0.95, 0.6, 0.2], [0.4])
    assert "4 predicted entities, 3 right" in text
    assert "score in [0.9, 1.0]:     1 entities (25.0 %), precision 100.0" in text
    assert "score in [0.0, 0.5):     2 entities (50.0 %), precision 50.0" in text

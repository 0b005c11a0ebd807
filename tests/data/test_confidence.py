"""data/confidence.py: span marginals against brute force over every valid IOB2 sequence, stability, errors."""

import itertools

import numpy as np
import pytest

from data.confidence import entity_scores

LABELS = ["O", "B-a", "I-a", "B-b-c", "I-b-c"]
SHUFFLED = ["B-a", "I-b-c", "O", "I-a", "B-b-c"]  # "O" not first
TYPES = ("a", "b-c")


def valid_iob2(tags: tuple[str, ...]) -> bool:
    """Hand-written IOB2 rule: I-X only right after B-X or I-X of the same X, never first."""
    for prev, tag in zip(("O",) + tags, tags):
        if tag.startswith("I-") and not (prev[:2] in ("B-", "I-") and prev[2:] == tag[2:]):
            return False
    return True


def is_exact_entity(tags: tuple[str, ...], kind: str, first: int, last: int) -> bool:
    """B-kind at first, I-kind up to last, and the next word (if any) not continuing it."""
    inside = all(tag == f"I-{kind}" for tag in tags[first + 1:last + 1])
    return tags[first] == f"B-{kind}" and inside and (last + 1 == len(tags) or tags[last + 1] != f"I-{kind}")


def brute_force(probs: np.ndarray, labels: list[str]) -> list[tuple[tuple[str, ...], float]]:
    """Every valid tag sequence with its probability, per-word probabilities (n, L) renormalised over them."""
    weighted = []
    for ids in itertools.product(range(len(labels)), repeat=len(probs)):
        tags = tuple(labels[j] for j in ids)
        if valid_iob2(tags):
            weighted.append((tags, float(np.prod(probs[np.arange(len(ids)), list(ids)]))))
    total = sum(w for _, w in weighted)
    return [(tags, w / total) for tags, w in weighted]


def all_spans(n: int) -> list[tuple[str, int, int]]:
    return [(kind, first, last) for kind in TYPES for first in range(n) for last in range(first, n)]


def random_probs(rng: np.random.Generator, n: int, sparse: bool = False) -> np.ndarray:
    """(n, 5) Dirichlet rows; `sparse` zeroes some entries (log-prob -inf), keeping column 0 positive."""
    probs = rng.dirichlet(np.full(5, 0.5), size=n)
    if sparse:
        probs[:, 1:] *= rng.random((n, 4)) > 0.4
        probs /= probs.sum(1, keepdims=True)
    return probs


@pytest.mark.parametrize("labels", [LABELS, SHUFFLED])
@pytest.mark.parametrize("sparse", [False, True])
def test_span_scores_match_brute_force(labels, sparse):
    rng = np.random.default_rng(0)
    for n in range(1, 6):
        probs = random_probs(rng, n, sparse)
        sequences = brute_force(probs, labels)
        spans = all_spans(n)
        expected = [sum(p for tags, p in sequences if is_exact_entity(tags, *span)) for span in spans]
        with np.errstate(divide="ignore"):
            got = entity_scores(np.log(probs), labels, spans)
        assert np.allclose(got, expected, atol=1e-12), (n, labels)


@pytest.mark.parametrize("labels", [LABELS, SHUFFLED])
def test_spans_starting_at_a_word_add_up_to_its_b_marginal(labels):
    rng = np.random.default_rng(1)
    n = 5
    probs = random_probs(rng, n)
    sequences = brute_force(probs, labels)
    for kind, first in itertools.product(TYPES, range(n)):
        b_marginal = sum(p for tags, p in sequences if tags[first] == f"B-{kind}")
        starting_here = entity_scores(np.log(probs), labels, [(kind, first, last) for last in range(first, n)])
        assert np.isclose(sum(starting_here), b_marginal, atol=1e-12), (kind, first)


def test_a_likely_continuation_lowers_the_score():
    """Same token probabilities on the span; only the next word's chance of continuing it differs."""
    span_rows = [[0.05, 0.9, 0.01, 0.02, 0.02], [0.05, 0.01, 0.9, 0.02, 0.02]]
    ends = entity_scores(np.log([*span_rows, [0.9, 0.05, 0.01, 0.02, 0.02]]), LABELS, [("a", 0, 1)])
    continues = entity_scores(np.log([*span_rows, [0.4, 0.05, 0.5, 0.03, 0.02]]), LABELS, [("a", 0, 1)])
    assert continues[0] < ends[0] - 0.3


def test_long_and_peaked_sentences_stay_finite_and_certain_spans_score_one():
    rng = np.random.default_rng(2)
    n = 2000
    log_probs = np.log(rng.dirichlet(np.full(5, 0.3), size=n))
    log_probs[rng.random((n, 5)) < 0.2] = -1e4
    log_probs[:, 1:][rng.random((n, 4)) < 0.2] = -np.inf  # "O" stays possible, so some valid path has mass
    spans = [(kind, i, min(i + k, n - 1)) for kind in TYPES for i in range(0, n, 7) for k in (0, 1, 3)]
    scores = np.array(entity_scores(log_probs, LABELS, spans))
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    # Words 1000..1002 are B-b-c I-b-c I-b-c and word 1003 is O with certainty (other labels at -1e4 or -inf).
    for i, label in zip(range(1000, 1004), ["B-b-c", "I-b-c", "I-b-c", "O"]):
        log_probs[i] = np.where(np.arange(5) == LABELS.index(label), 0.0, [-1e4, -np.inf, -1e4, -np.inf, -1e4])
    certain, shorter, other_type = entity_scores(log_probs, LABELS, [("b-c", 1000, 1002), ("b-c", 1000, 1001),
                                                                     ("a", 1000, 1002)])
    assert np.isclose(certain, 1.0) and np.allclose([shorter, other_type], 0.0, atol=1e-12)


def test_empty_inputs():
    assert entity_scores(np.log(random_probs(np.random.default_rng(3), 4)), LABELS, []) == []
    assert entity_scores(np.zeros((0, 5)), LABELS, []) == []


@pytest.mark.parametrize("n, span", [(4, ("c", 0, 1)), (4, ("b", 0, 0)), (4, ("A", 0, 0)), (4, ("a", 0, 4)),
                                     (4, ("a", -1, 0)), (4, ("a", 2, 1)), (0, ("a", 0, 0))])
def test_unknown_types_and_out_of_range_spans_raise(n, span):
    log_probs = np.log(random_probs(np.random.default_rng(4), n))
    with pytest.raises(ValueError):
        entity_scores(log_probs, LABELS, [span])

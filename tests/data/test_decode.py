"""Decoding per-word label scores into IOB2 tags: Viterbi under IOB2's constraints against brute force."""

import itertools

import numpy as np
import pytest

from data.decode import decode_tags, iob2_transitions, viterbi_iob2

LABELS = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
LABEL_TO_ID = {label: i for i, label in enumerate(LABELS)}
MADE_UP = ["B-creative-work", "I-creative-work", "O", "B-x", "I-x"]  # O not first, hyphenated type


def valid(tags) -> bool:
    """IOB2, checked by hand: an I-X only right after B-X or I-X."""
    return all(not t.startswith("I-") or (i > 0 and tags[i - 1] in ("B-" + t[2:], t)) for i, t in enumerate(tags))


def test_transitions_forbid_exactly_i_without_its_entity():
    for labels in (LABELS, MADE_UP):
        allowed = iob2_transitions(labels)
        for (p, prev), (n, nxt) in itertools.product(enumerate(labels), enumerate(labels)):
            expected = not nxt.startswith("I-") or prev in ("B-" + nxt[2:], nxt)
            assert allowed[p, n] == expected, (prev, nxt)


@pytest.mark.parametrize("labels", [LABELS, MADE_UP])
def test_viterbi_finds_the_best_valid_sequence(labels):
    rng = np.random.default_rng(0)
    sequences = [s for s in itertools.product(range(len(labels)), repeat=4) if valid([labels[i] for i in s])]
    for _ in range(20):
        log_probs = np.log(rng.dirichlet(np.full(len(labels), 0.3), size=4))
        best = max(sequences, key=lambda s: sum(log_probs[i, label] for i, label in enumerate(s)))
        assert tuple(viterbi_iob2(log_probs, labels)) == best


def test_viterbi_keeps_a_valid_argmax_and_repairs_an_invalid_one():
    def scores(*rows: dict[str, float]) -> np.ndarray:
        out = np.full((len(rows), len(LABELS)), np.log(0.01))
        for i, row in enumerate(rows):
            for label, p in row.items():
                out[i, LABEL_TO_ID[label]] = np.log(p)
        return out

    valid_argmax = scores({"B-PER": 0.9}, {"I-PER": 0.9}, {"O": 0.9})
    assert decode_tags(valid_argmax, "viterbi", LABELS) == decode_tags(valid_argmax, "argmax", LABELS) == ["B-PER", "I-PER", "O"]
    # "O I-ORG": argmax opens the entity at the second word; Viterbi extends it back when the first word was close.
    doubtful = scores({"O": 0.5, "B-ORG": 0.4}, {"I-ORG": 0.9})
    assert decode_tags(doubtful, "argmax", LABELS) == ["O", "B-ORG"]
    assert decode_tags(doubtful, "viterbi", LABELS) == ["B-ORG", "I-ORG"]
    # A type switch inside an entity: "B-LOC I-ORG" becomes one entity of the likelier type.
    switch = scores({"B-LOC": 0.8, "B-ORG": 0.15}, {"I-ORG": 0.5, "I-LOC": 0.4})
    assert decode_tags(switch, "viterbi", LABELS) == ["B-LOC", "I-LOC"]


def test_decode_always_gives_valid_iob2():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 30):
        log_probs = np.log(rng.dirichlet(np.full(len(LABELS), 0.2), size=n))
        for decoder in ("viterbi", "argmax"):
            assert valid(decode_tags(log_probs.tolist(), decoder, LABELS))


def test_decode_edge_cases():
    assert decode_tags([], "viterbi", LABELS) == [] and decode_tags([], "argmax", LABELS) == []
    with pytest.raises(ValueError, match="unknown decoder 'beam'"):
        decode_tags([[0.0] * len(LABELS)], "beam", LABELS)

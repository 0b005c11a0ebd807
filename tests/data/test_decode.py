"""Decoding per-word label scores into IOB2 tags: Viterbi under IOB2's constraints against brute force."""

import itertools

import numpy as np
import pytest

from data.decode import decode_tags, iob2_transitions, viterbi_iob2
from data.labels import ID_TO_LABEL, LABEL_TO_ID, LABELS, first_iob2_violation


def valid(ids) -> bool:
    return first_iob2_violation([ID_TO_LABEL[i] for i in ids]) is None


def test_transitions_forbid_exactly_i_without_its_entity():
    allowed = iob2_transitions()
    for prev, nxt in itertools.product(LABELS, LABELS):
        expected = not nxt.startswith("I-") or prev[2:] == nxt[2:]
        assert allowed[LABEL_TO_ID[prev], LABEL_TO_ID[nxt]] == expected, (prev, nxt)


def test_viterbi_finds_the_best_valid_sequence():
    rng = np.random.default_rng(0)
    sequences = [s for s in itertools.product(range(len(LABELS)), repeat=4) if valid(s)]
    for _ in range(20):
        log_probs = np.log(rng.dirichlet(np.full(len(LABELS), 0.3), size=4))
        best = max(sequences, key=lambda s: sum(log_probs[i, label] for i, label in enumerate(s)))
        assert tuple(viterbi_iob2(log_probs)) == best


def test_viterbi_keeps_a_valid_argmax_and_repairs_an_invalid_one():
    def scores(*rows: dict[str, float]) -> np.ndarray:
        out = np.full((len(rows), len(LABELS)), np.log(0.01))
        for i, row in enumerate(rows):
            for label, p in row.items():
                out[i, LABEL_TO_ID[label]] = np.log(p)
        return out

    valid_argmax = scores({"B-PER": 0.9}, {"I-PER": 0.9}, {"O": 0.9})
    assert decode_tags(valid_argmax, "viterbi") == decode_tags(valid_argmax, "argmax") == ["B-PER", "I-PER", "O"]
    # "O I-ORG": argmax opens the entity at the second word; Viterbi extends it back when the first word was close.
    doubtful = scores({"O": 0.5, "B-ORG": 0.4}, {"I-ORG": 0.9})
    assert decode_tags(doubtful, "argmax") == ["O", "B-ORG"]
    assert decode_tags(doubtful, "viterbi") == ["B-ORG", "I-ORG"]
    # A type switch inside an entity: "B-LOC I-ORG" becomes one entity of the likelier type.
    switch = scores({"B-LOC": 0.8, "B-ORG": 0.15}, {"I-ORG": 0.5, "I-LOC": 0.4})
    assert decode_tags(switch, "viterbi") == ["B-LOC", "I-LOC"]


def test_decode_always_gives_valid_iob2():
    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 30):
        log_probs = np.log(rng.dirichlet(np.full(len(LABELS), 0.2), size=n))
        for decoder in ("viterbi", "argmax"):
            assert first_iob2_violation(decode_tags(log_probs.tolist(), decoder)) is None


def test_decode_edge_cases():
    assert decode_tags([], "viterbi") == [] and decode_tags([], "argmax") == []
    with pytest.raises(ValueError, match="unknown decoder 'beam'"):
        decode_tags([[0.0] * len(LABELS)], "beam")

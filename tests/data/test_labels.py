"""data/labels.py: the CoNLL-2003 label set and the IOB1 -> IOB2 conversion."""

import pytest

from data.labels import LABELS, first_iob2_violation, iob1_to_iob2


def test_label_order_matches_hf_conll2003_names():
    assert list(LABELS) == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


@pytest.mark.parametrize(
    "iob1, iob2",
    [
        (["I-ORG", "O", "I-MISC", "O"], ["B-ORG", "O", "B-MISC", "O"]),  # entities opening with I-
        (["I-PER", "I-PER", "B-PER", "I-PER"], ["B-PER", "I-PER", "B-PER", "I-PER"]),  # B- splits same-type run
        (["I-ORG", "I-ORG", "I-LOC", "I-LOC"], ["B-ORG", "I-ORG", "B-LOC", "I-LOC"]),  # type change in a run
        (["O", "B-MISC", "O"], ["O", "B-MISC", "O"]),  # B- after O (train.txt quirk) stays a start
        (["B-LOC", "I-LOC", "O"], ["B-LOC", "I-LOC", "O"]),  # valid IOB2 is unchanged
        ([], []),
    ],
)
def test_iob1_to_iob2(iob1, iob2):
    assert iob1_to_iob2(iob1) == iob2
    assert iob1_to_iob2(iob2) == iob2
    assert first_iob2_violation(iob2) is None


def test_first_iob2_violation_and_unknown_tags():
    assert first_iob2_violation(["B-PER", "I-PER", "I-LOC"]) == 2
    assert first_iob2_violation(["O", "I-PER"]) == 1
    assert first_iob2_violation(["I-PER"]) == 0
    for bad in (["B-FOO"], ["E-PER"], ["o"], ["I-"]):
        with pytest.raises(ValueError, match="unknown NER tag"):
            iob1_to_iob2(bad)

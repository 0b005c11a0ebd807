"""data/labels.py: a run's label set, learned from tagged sentences or read from a labels file."""

import pytest

from data.labels import LabelSet

CONLL = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


def test_learned_order_is_o_then_types_sorted_by_name():
    sentences = [["B-PER", "O", "B-ORG"], None, ["O"], ["B-MISC", "I-MISC", "B-LOC"]]
    assert list(LabelSet.from_sentences(sentences, "train.txt")) == CONLL
    assert list(LabelSet.from_sentences(reversed(sentences), "train.txt")) == CONLL  # file order does not matter


def test_any_type_name():
    labels = LabelSet.from_sentences([["B-creative-work", "I-creative-work", "B-GPE", "B-person2"]], "t")
    assert labels.types == ("GPE", "creative-work", "person2")
    assert labels.ids["I-creative-work"] == 4 and len(labels) == 7


def test_training_data_without_entities_is_an_error():
    with pytest.raises(ValueError, match="train.txt: no entity tag"):
        LabelSet.from_sentences([["O", "O"], None], "train.txt")


def test_labels_file_keeps_its_order(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("B-PER\nI-PER\n\nO\n  B-product \nI-product\n")
    labels = LabelSet.read(path)
    assert list(labels) == ["B-PER", "I-PER", "O", "B-product", "I-product"]
    assert labels.ids["O"] == 2 and labels.types == ("PER", "product")


@pytest.mark.parametrize("text, message", [
    ("O\nB-PER\nI-PER\nB-PER\n", r"labels.txt:4: B-PER already listed on line 2"),
    ("O\nB_PER\n", r"labels.txt:2: malformed tag 'B_PER'"),
    ("O\nB-PER\n", r"needs both B-PER and I-PER"),
    ("B-PER\nI-PER\n", r"has no O"),
    ("O\nS-PER\nB-PER\nI-PER\n", r"'S-PER' is not an IOB2 label"),
])
def test_bad_labels_files(tmp_path, text, message):
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        LabelSet.read(path)

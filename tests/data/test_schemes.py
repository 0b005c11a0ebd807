"""data/schemes.py: IOB1, IOB2 and BIOES tags read into the same IOB2 entities, and every bad tag an error."""

import pytest

from data.metrics import chunks
from data.schemes import SchemeError, detect_scheme, split_tag, to_iob2

# One sentence, "Peter Blackburn of the EU Commission in Brussels said", in the three schemes.
IOB2 = ["B-PER", "I-PER", "O", "O", "B-ORG", "I-ORG", "O", "B-LOC", "B-LOC", "O"]
IOB1 = ["I-PER", "I-PER", "O", "O", "I-ORG", "I-ORG", "O", "I-LOC", "B-LOC", "O"]
BIOES = ["B-PER", "E-PER", "O", "O", "B-ORG", "E-ORG", "O", "S-LOC", "S-LOC", "O"]
ENTITIES = [("PER", 0, 1), ("ORG", 4, 5), ("LOC", 7, 7), ("LOC", 8, 8)]  # written out by hand


@pytest.mark.parametrize("tags, scheme", [(IOB2, "iob2"), (IOB2, "iob1"), (IOB1, "iob1"), (BIOES, "bioes")])
def test_every_scheme_reads_into_the_same_iob2_entities(tags, scheme):
    assert to_iob2(tags, scheme) == IOB2
    assert chunks(to_iob2(tags, scheme)) == ENTITIES


def test_bioes_inside_and_type_names():
    assert to_iob2(["B-creative-work", "I-creative-work", "E-creative-work", "S-GPE"], "bioes") == [
        "B-creative-work", "I-creative-work", "I-creative-work", "B-GPE"]
    assert split_tag("I-creative-work") == ("I", "creative-work")


def test_detection():
    assert detect_scheme([IOB2, IOB1]) == "iob1"  # iob1 reads both the same
    assert detect_scheme([["O"], BIOES]) == "bioes"
    assert detect_scheme([]) == "iob1"


@pytest.mark.parametrize("tags, scheme, index, message", [
    (["O", "B_PER"], "iob1", 1, "malformed tag 'B_PER'"),
    (["X-PER"], "iob2", 0, "malformed tag 'X-PER'"),
    (["B-"], "iob1", 0, "malformed tag 'B-'"),
    (["o"], "iob1", 0, "malformed tag 'o'"),
    (["O", "I-PER"], "iob2", 1, "I-PER after O does not continue an entity"),
    (["B-PER", "I-LOC"], "iob2", 1, "I-LOC after B-PER"),
    (["S-PER"], "iob2", 0, "BIOES tag, but the file is read as IOB2"),
    (["B-PER", "E-PER"], "iob1", 1, "BIOES tag, but the file is read as IOB1"),
    (["B-PER", "O"], "bioes", 1, "closes a B-PER entity with E-PER"),
    (["B-PER", "E-LOC"], "bioes", 1, "closes a B-PER entity with E-PER"),
    (["O", "E-PER"], "bioes", 1, "E-PER after O: in BIOES an I- or E- tag continues"),
    (["I-PER"], "bioes", 0, "at the start of a sentence"),
    (["B-PER", "I-PER"], "bioes", 1, "ends inside a B-PER entity"),
])
def test_bad_tags_name_the_word(tags, scheme, index, message):
    with pytest.raises(SchemeError, match=message) as raised:
        to_iob2(tags, scheme)
    assert raised.value.index == index

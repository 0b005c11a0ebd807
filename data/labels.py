"""CoNLL-2003 NER label set, trained as IOB2 (BIO), and the IOB1 -> IOB2 conversion.

The order is the one of the Hugging Face `conll2003` dataset's `ner_tags` feature
(O, then B-/I- pairs for PER, ORG, LOC, MISC), so label ids of a head trained here mean
the same as the integer tags most public CoNLL-2003 checkpoints and copies use.
"""

from collections.abc import Sequence

ENTITY_TYPES: tuple[str, ...] = ("PER", "ORG", "LOC", "MISC")
LABELS: tuple[str, ...] = ("O",) + tuple(f"{p}-{t}" for t in ENTITY_TYPES for p in ("B", "I"))
LABEL_TO_ID: dict[str, int] = {label: i for i, label in enumerate(LABELS)}
ID_TO_LABEL: dict[int, str] = dict(enumerate(LABELS))


def check_tag(tag: str) -> None:
    """Raise ValueError unless `tag` is O or B-/I- followed by one of ENTITY_TYPES."""
    if tag not in LABEL_TO_ID:
        raise ValueError(
            f"unknown NER tag {tag!r}: expected O or B-/I- with one of {', '.join(ENTITY_TYPES)}"
        )


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Convert one sentence from IOB1 to IOB2: an I-X that does not continue an X entity becomes B-X.

    In IOB1 (the original CoNLL-2003 release) an entity may start with I-X and B-X only
    separates two adjacent entities of the same type; IOB2 starts every entity with B-X.
    The conversion leaves valid IOB2 unchanged, so it is safe on either scheme.
    """
    out = []
    prev = "O"
    for tag in tags:
        check_tag(tag)
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def first_iob2_violation(tags: Sequence[str]) -> int | None:
    """Index of the first I-X that does not follow B-X or I-X (invalid in IOB2), or None."""
    prev = "O"
    for i, tag in enumerate(tags):
        check_tag(tag)
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            return i
        prev = tag
    return None

"""Tag schemes in, IOB2 inside: parse a tag, convert a sentence's tags to IOB2, detect a file's scheme.

Three schemes are read; everything downstream (labels, training, decoding, output files) is IOB2.

- IOB2 (BIO): every entity starts with B-X, its other words are I-X.
- IOB1 (the original CoNLL-2003 release): an entity may start with I-X; B-X only separates two adjacent
  entities of the same type. Valid IOB2 reads the same under IOB1, so IOB1 is the safe reading of either.
- BIOES / IOBES: S-X is a one-word entity, B-X ... E-X a longer one with I-X inside.

`auto` reads BIOES when a file holds an S- or E- tag and IOB1 otherwise: no file reads differently under
`auto` than under its own scheme. `iob2` is the strict choice: an I-X that opens an entity is an error.

A tag is `O` or `P-TYPE`, P one of B, I, E, S and TYPE any non-empty text without whitespace (`B-PER`,
`I-creative-work`, `B-GPE2`); the type is everything after the first hyphen, as conlleval reads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

SCHEMES: tuple[str, ...] = ("auto", "iob1", "iob2", "bioes")
_TAG = re.compile(r"([BIES])-(\S+)")


class SchemeError(ValueError):
    """A tag or tag sequence the scheme does not allow; `index` is the offending word of the sentence."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def split_tag(tag: str, index: int = 0) -> tuple[str, str]:
    """"B-PER" -> ("B", "PER"), "O" -> ("O", ""); anything else raises SchemeError."""
    if tag == "O":
        return "O", ""
    match = _TAG.fullmatch(tag)
    if match is None:
        raise SchemeError(index, f"malformed tag {tag!r}: expected O or B-, I-, E-, S- followed by a type")
    return match.group(1), match.group(2)


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """The scheme `auto` reads a file's tags with: bioes when an S- or E- tag occurs, else iob1."""
    for tags in tag_sequences:
        if any(tag[:2] in ("S-", "E-") for tag in tags):
            return "bioes"
    return "iob1"


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """One sentence's tags under `scheme` (iob1, iob2 or bioes; resolve auto with detect_scheme) as IOB2."""
    if scheme == "bioes":
        return _bioes_to_iob2(tags)
    if scheme not in ("iob1", "iob2"):
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES[1:])} here, got {scheme!r}")
    out: list[str] = []
    previous_type = None  # type of the entity the previous word belongs to
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag, i)
        if prefix in ("E", "S"):
            raise SchemeError(i, f"{tag} is a BIOES tag, but the file is read as {scheme.upper()}, which has no "
                                 "E- or S- tags (choose the bioes scheme)")
        if prefix == "I" and kind != previous_type:
            if scheme == "iob2":
                after = f"after {tags[i - 1]}" if i else "at the start of a sentence"
                raise SchemeError(i, f"{tag} {after} does not continue an entity, which IOB2 forbids "
                                     "(choose the iob1 scheme if the file is IOB1)")
            tag = "B-" + kind
        out.append(tag)
        previous_type = kind or None
    return out


def _bioes_to_iob2(tags: Sequence[str]) -> list[str]:
    """S-X -> B-X and E-X -> I-X, after checking that every entity opened by B-X is closed by E-X."""
    out: list[str] = []
    open_type = None  # type of an entity opened by B-X and not yet closed by E-X
    for i, tag in enumerate(tags):
        prefix, kind = split_tag(tag, i)
        if open_type is not None and not (prefix in ("I", "E") and kind == open_type):
            raise SchemeError(i, f"{tag} follows {tags[i - 1]}, but BIOES closes a B-{open_type} entity with "
                                 f"E-{open_type}")
        if open_type is None and prefix in ("I", "E"):
            after = f"after {tags[i - 1]}" if i else "at the start of a sentence"
            raise SchemeError(i, f"{tag} {after}: in BIOES an I- or E- tag continues a B- of its type")
        open_type = kind if prefix in ("B", "I") else None
        out.append("O" if prefix == "O" else {"S": "B", "E": "I"}.get(prefix, prefix) + "-" + kind)
    if open_type is not None:
        raise SchemeError(len(tags) - 1, f"the sentence ends inside a B-{open_type} entity that no E-{open_type} "
                                         "closes")
    return out

"""The label set of a run: O, then B-/I- for every entity type, learned from the training data or given.

Learned (`LabelSet.from_sentences`), the types are sorted by name (Python's string order, so `LOC` < `MISC` <
`ORG` < `PER`, and upper case before lower case), each as B-X then I-X, after O: the same data gives the same
label ids whatever order its sentences come in. Given (`LabelSet.read`, `--labels FILE`), a file lists one label
per line in the order of the head's rows, for instance to match an existing checkpoint's `id2label`. Either way
the set is saved in the run's run.json and used by everything downstream: alignment, the head size, decoding,
metrics, evaluate, predict and both exports.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from data.schemes import split_tag


@dataclass(frozen=True)
class LabelSet:
    labels: tuple[str, ...]  # row j of the head scores labels[j]

    def __post_init__(self) -> None:
        labels = self.labels
        if len(set(labels)) != len(labels):
            raise ValueError(f"label set {list(labels)} repeats a label")
        if "O" not in labels:
            raise ValueError(f"label set {list(labels)} has no O")
        for label in labels:
            if split_tag(label)[0] not in ("O", "B", "I"):
                raise ValueError(f"label set {list(labels)}: {label!r} is not an IOB2 label (O, B-X or I-X)")
        for kind in self.types:
            if f"B-{kind}" not in labels or f"I-{kind}" not in labels:
                raise ValueError(f"label set {list(labels)} needs both B-{kind} and I-{kind}")

    @classmethod
    def from_types(cls, types: Iterable[str]) -> LabelSet:
        """O, then B-X, I-X for each type, sorted by name."""
        return cls(("O",) + tuple(f"{p}-{kind}" for kind in sorted(set(types)) for p in ("B", "I")))

    @classmethod
    def from_sentences(cls, tag_sequences: Iterable[Sequence[str] | None], source: str) -> LabelSet:
        """The types of IOB2 tag sequences (None: untagged); `source` names the data in the error when none has
        an entity, since a tagger cannot learn types it never sees."""
        types = {tag[2:] for tags in tag_sequences if tags is not None for tag in tags if tag != "O"}
        if not types:
            raise ValueError(f"{source}: no entity tag in the training data (only O, or no NER column): a tagger "
                             "needs examples of every type it should find")
        return cls.from_types(types)

    @classmethod
    def read(cls, path: str | Path) -> LabelSet:
        """A labels file: one label per line, in head order; blank lines and surrounding spaces are ignored."""
        labels, lines = [], {}
        with open(path, encoding="utf-8-sig") as f:
            for lineno, raw in enumerate(f, start=1):
                label = raw.strip()
                if not label:
                    continue
                if label in lines:
                    raise ValueError(f"{path}:{lineno}: {label} already listed on line {lines[label]}")
                try:
                    split_tag(label)
                except ValueError as e:
                    raise ValueError(f"{path}:{lineno}: {e}") from None
                labels.append(label)
                lines[label] = lineno
        try:
            return cls(tuple(labels))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @cached_property
    def types(self) -> tuple[str, ...]:
        """Entity types in the order of their B- labels."""
        return tuple(label[2:] for label in self.labels if label.startswith("B-"))

    @cached_property
    def ids(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def __iter__(self) -> Iterator[str]:
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __str__(self) -> str:
        return ", ".join(self.labels)

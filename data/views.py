"""The three ways a tagger meets text, and so the three ways validation is scored.

- `documents`: the file as it is, each sentence with the rest of its document around it (document windows);
- `alone`: every sentence a document of its own, as `predict` sees each text it is given;
- `bare`: alone, without the sentence's final punctuation, as headlines and chat messages come.

A model trained only on whole documents can score well on the first and collapse on the other two (it never saw
a short text right after BOS), so training reports all three (train/loop.py), and trains on sentences taken out of
their documents besides the documents (`taken_out`), a share of them without their final punctuation
(`some_without_final_punctuation`).
"""

from __future__ import annotations

import dataclasses
import random
import unicodedata
from collections.abc import Callable, Sequence
from typing import TypeVar

from data.conll import Sentence, document_spans

T, R = TypeVar("T"), TypeVar("R")

VIEWS: tuple[str, ...] = ("documents", "alone", "bare")
VIEW_NAMES: dict[str, str] = {"documents": "as documents", "alone": "sentence by sentence",
                              "bare": "without final punctuation"}  # how reports and curves call them


def alone(sentences: Sequence[Sentence]) -> list[Sentence]:
    """Every sentence its own document."""
    return [dataclasses.replace(s, doc_id=i, doc_start=False) for i, s in enumerate(sentences)]


def taken_out(sentences: Sequence[Sentence]) -> list[Sentence]:
    """Every sentence that shares its document with others, as a document of its own: what `--window both` trains
    besides the document windows (a sentence that is a document by itself is already alone there)."""
    return alone([sentences[s] for start, end in document_spans(sentences) if end - start > 1
                  for s in range(start, end)])


def is_punctuation(word: str) -> bool:
    return all(unicodedata.category(c).startswith("P") for c in word)


def without_final_punctuation(sentence: Sentence) -> Sentence:
    """The sentence without its trailing words made only of punctuation ('.', '?', '!', '...', '"'), as long as
    they are outside entities and one word stays."""
    end = len(sentence.words)
    while end > 1 and is_punctuation(sentence.words[end - 1]) and (sentence.tags is None or
                                                                    sentence.tags[end - 1] == "O"):
        end -= 1
    tags = None if sentence.tags is None else sentence.tags[:end]
    return dataclasses.replace(sentence, words=sentence.words[:end], tags=tags)


def views(sentences: Sequence[Sentence]) -> dict[str, list[Sentence]]:
    """The sentences of each view, by name. When every sentence already is its own document (WNUT-17's posts),
    `alone` is the very same list as `documents`, so a caller can score it once."""
    documents = list(sentences)
    own = len({s.doc_id for s in documents}) == len(documents)
    single = documents if own else alone(documents)
    return {"documents": documents, "alone": single, "bare": [without_final_punctuation(s) for s in single]}


def once_per_view(views: dict[str, T], work: Callable[[str, T], R]) -> dict[str, R]:
    """work(name, view) for every view, done once per distinct object: `views` gives two views that coincide
    (every sentence already alone) the very same list, and they are then scored once."""
    done: dict[int, R] = {}
    for name, view in views.items():
        if id(view) not in done:
            done[id(view)] = work(name, view)
    return {name: done[id(view)] for name, view in views.items()}


def some_without_final_punctuation(sentences: Sequence[Sentence], fraction: float, seed: int) -> list[Sentence]:
    """The sentences with a `fraction` of them (drawn by `seed`) without their final punctuation: training windows
    shaped like the `bare` view, headlines and chat messages, and like short texts typed without a full stop."""
    chosen = set(random.Random(seed).sample(range(len(sentences)), round(fraction * len(sentences))))
    return [without_final_punctuation(s) if i in chosen else s for i, s in enumerate(sentences)]

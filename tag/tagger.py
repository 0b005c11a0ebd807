"""The Python API of a trained tagger: entities with character offsets and a confidence, from raw text or words.

    from tag import load_tagger
    tagger = load_tagger("runs/default")
    tagger.tag(["Angela Merkel visited Paris ."])
    # [[Entity(type='PER', text='Angela Merkel', start=0, end=13, score=0.99...), Entity(type='LOC', ...)]]
    tagger.tag_words([["Angela", "Merkel", "visited", "Paris", "."]])

Every text (or word list) is tagged alone, as a document of its own. Raw text is split into words as CoNLL-2003
splits them (tag/words.py; combining marks stay in their word); pre-split words are joined by single spaces. `start`
and `end` are code-point offsets (Python string indices) into the text as given, or into the joined words: the model
reads every word in its composed (NFC) form, but offsets and `text` always index the caller's own string.
`score` is the probability, under the tagger's label distributions and IOB2's rules, that exactly this span is an
entity of this type (data/confidence.py): an entity below 0.5 is more likely wrong than right.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.conll import Sentence
from data.confidence import entity_scores
from data.metrics import chunks
from predictor.predictor import Predictor
from tag.run import load_run
from tag.words import split_words


@dataclass(frozen=True)
class Entity:
    type: str
    text: str
    start: int  # code-point offset (string index) of the first character in the text as given
    end: int  # code-point offset one past the last character: text == source[start:end]
    score: float  # in [0, 1]: the probability that exactly this span is an entity of this type


@dataclass(frozen=True)
class Prepared:
    """One input as the model reads it: the text that offsets index, its words, and each word's span in the text."""

    text: str
    words: list[str]
    spans: list[tuple[int, int]]

    @classmethod
    def from_text(cls, text: str) -> Prepared:
        """A raw text, split into words as CoNLL-2003 splits them (tag/words.py)."""
        found = split_words(text)
        return cls(text, [m.group() for m in found], [(m.start(), m.end()) for m in found])

    @classmethod
    def from_words(cls, words: Sequence[str]) -> Prepared:
        """Pre-split words (each `is_word`), joined by single spaces."""
        starts = np.cumsum([0] + [len(word) + 1 for word in words[:-1]]).tolist()
        return cls(" ".join(words), list(words), [(start, start + len(word)) for start, word in zip(starts, words)])


def is_word(word: object) -> bool:
    """A word as tag_words takes it: a non-empty string without whitespace."""
    return isinstance(word, str) and bool(word) and not any(c.isspace() for c in word)


class EntityTagger:
    """A trained run, loaded once (LoRA merged into the weights) and used for as many calls as needed."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    @property
    def types(self) -> tuple[str, ...]:
        return self.predictor.labels.types

    def tag(self, texts: Iterable[str]) -> list[list[Entity]]:
        """The entities of each text, in text order. A text without words gets none."""
        if isinstance(texts, str):
            raise TypeError("tag() takes a list of texts; wrap a single text in a list: tag([text])")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__} {text!r}, not a string")
        return self.tag_prepared([Prepared.from_text(text) for text in texts])

    def tag_words(self, sentences: Iterable[Sequence[str]]) -> list[list[Entity]]:
        """The entities of each pre-split sentence; offsets index the words joined by single spaces. A flat list of
        words is refused rather than read as sentences of one-character words."""
        if isinstance(sentences, str):
            raise TypeError("tag_words() takes a list of word lists; tag([text]) tags a raw text")
        sentences = list(sentences)
        flat = [i for i, words in enumerate(sentences) if isinstance(words, str)]
        if flat:
            hint = f": for one sentence, tag_words([{sentences!r}])" if len(flat) == len(sentences) else ""
            raise TypeError(f"tag_words() takes a list of word lists, and sentence {flat[0]} is a string "
                            f"({sentences[flat[0]]!r}){hint}")
        sentences = [list(words) for words in sentences]
        for i, words in enumerate(sentences):
            for w, word in enumerate(words):
                if not is_word(word):
                    raise ValueError(f"sentence {i}, word {w}: {word!r} is not a word (a non-empty string without "
                                     "whitespace)")
        return self.tag_prepared([Prepared.from_words(words) for words in sentences])

    def tag_prepared(self, items: Sequence[Prepared]) -> list[list[Entity]]:
        """The entities of each prepared input, raw texts and word lists mixed, in one call of the predictor: what
        tag() and tag_words() do once their inputs are checked, and how a server tags many requests together."""
        nonempty = [i for i, item in enumerate(items) if item.words]
        found: list[list[Entity]] = [[] for _ in items]
        if not nonempty:
            return found
        sentences = [Sentence(items[i].words, doc_id=k) for k, i in enumerate(nonempty)]
        result = self.predictor.tag(sentences)
        for i, tags, log_probs in zip(nonempty, result.tags, result.log_probs):
            found[i] = scored_entities(items[i], tags, log_probs, self.predictor.labels.labels)
        return found


def scored_entities(item: Prepared, tags: Sequence[str], log_probs: Sequence[Sequence[float]],
                    labels: Sequence[str]) -> list[Entity]:
    """The entities of one tagged input: the chunks of its words' `tags`, with offsets into its text and the
    probability the label scores give each one. The tags need not be the predicted ones: evaluate's page scores the
    gold entities too, to show how likely the tagger found the ones it missed."""
    found = chunks(tags)
    scores = entity_scores(np.asarray(log_probs), labels, found)
    spans = item.spans
    return [Entity(kind, item.text[spans[first][0]:spans[last][1]], spans[first][0], spans[last][1], score)
            for (kind, first, last), score in zip(found, scores)]


def load_tagger(run_dir: str | Path, device: str = "auto", model: str | None = None, int8: bool | None = None
                ) -> EntityTagger:
    """The tagger of a run directory written by `python -m train`; `model` overrides the base checkpoint path.
    `int8`: int8 matmuls on a CPU (tag/quantize.py); None: the default, float32 (tag/quantize.py says why)."""
    return EntityTagger(load_run(run_dir, device=device, model=model, merge=True, int8=int8))


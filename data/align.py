"""Word -> subword alignment: sentences become model-sized Examples, predictions come back per word.

Encoding. Each word is encoded on its own, with the tokens it has inside running text after a
space (`Tokenizer.encode_word`): `" " + word` for a byte-level BPE (Llama 3's tiktoken vocabulary
glues a leading space to the following word, "Ġword"), the word with its dummy-prefix '▁' for a
Llama 2 sentencepiece model. Doing it for the first word too gives every word the same tokens
wherever it stands. Neither joins text across the space in front of a word, so the concatenated
word encodings equal the encoding of the words joined by spaces (with a leading space for BPE)
and no token straddles two words. A word is encoded in its composed form (NFC): a tokenizer
learnt "é", not "e" and a combining accent, from text that is nearly all NFC. The words
themselves stay as given, so offsets into the caller's text are unchanged.

Labels. The first subtoken of a word carries its label id; the other subtokens and BOS get
IGNORE_INDEX, so the loss and the prediction see exactly one position per word.

Windows. An Example is one window of at most `max_len` tokens (BOS included when `add_bos`).
A sentence that does not fit is cut, at word boundaries, into chunks of about `stride` tokens,
and each chunk gets a window filled up with the words around it, so windows overlap. Each word
is predicted in exactly one of its sentence's windows: the one where it has most context,
min(tokens before it, tokens after it), the earliest on ties. Nothing is truncated, except a
single word longer than a whole window (a 300-digit number, a run of CJK characters without a
space): it keeps the subtokens that fit, from its first. Its first subtoken carries its label,
and the ones nearest it say most about it; splitting it into several words would give one word
several labels, and refusing it would leave the whole call, every other text in it, untagged.

Document windows (`document=True`). The whole document is treated like one long sentence: its
word stream is cut into chunks of `stride` tokens, each chunk grown into a full window, and each
word labelled in the one window where it has most context. Every sentence then sees its
neighbours, and a token is computed about `max_len / stride` times. They replace FLERT's context
(Schweter & Akbik 2020), which reads a sentence's neighbours again in the window of every sentence
and so costs several times the training for what document windows give
(docs/results.md#the-first-recipe-document-windows).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import TypeVar

from data.conll import Sentence, document_spans
from data.labels import LabelSet
from model.tagger import IGNORE_INDEX
from model.tokenizer import Tokenizer

T = TypeVar("T")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # per token: label id on the first subtoken of each predicted word, IGNORE_INDEX elsewhere
    positions: list[int]  # token index of each predicted word's first subtoken, ascending
    words: list[tuple[int, int]]  # (sentence index, word index) predicted at each entry of positions


@dataclass(frozen=True)
class Window:
    """The words [left, right) of a document's word stream in one window, labelling the words `predicted`."""

    left: int
    right: int
    predicted: list[int]  # stream indices, ascending

    def shifted(self, by: int) -> Window:
        return Window(self.left + by, self.right + by, [i + by for i in self.predicted])


def build_examples(
    sentences: Sequence[Sentence],
    tokenizer: Tokenizer,
    max_len: int,
    *,
    add_bos: bool = True,
    stride: int | None = None,
    document: bool = False,
    labels: LabelSet | None = None,
) -> list[Example]:
    """Turn sentences into Examples; sentence indices in Example.words index `sentences`.

    Sentences with tags=None (inference) get IGNORE_INDEX labels but the same positions.
    `document`: windows over whole documents (`document_windows`), else over each sentence on its own
    (`sentence_windows`). `stride`: chunk size in tokens (default half the window). `labels` gives the
    label ids of tagged sentences; it may be None only when no sentence has tags.
    """
    budget = max_len - int(add_bos)  # tokens available for words in one window
    if budget < 1:
        raise ValueError(f"max_len={max_len} leaves no room for words")
    stride = budget // 2 if stride is None else stride
    if not 1 <= stride <= budget:
        raise ValueError(f"stride must be in [1, {budget}], got {stride}")
    label_ids = _label_ids(sentences, labels)
    encode = _word_encoder(tokenizer, budget)
    bos = [tokenizer.bos_id] if add_bos else []
    examples: list[Example] = []
    for start, end in document_spans(sentences):
        stream = [(s, w, encode(word)) for s in range(start, end) for w, word in enumerate(sentences[s].words)]
        sizes = [len(ids) for _, _, ids in stream]
        if document:
            windows = document_windows(sizes, budget, stride)
        else:
            windows = sentence_windows(sizes, [len(sentences[s].words) for s in range(start, end)], budget, stride)
        examples += [_example(stream, window, bos, sentences, label_ids) for window in windows]
    return examples


def document_windows(sizes: list[int], budget: int, stride: int) -> list[Window]:
    """The windows over one document's words (`sizes`: tokens per word) read as one running text: chunks of about
    `stride` tokens, each grown to at most `budget` tokens with the words around it, each word predicted in the
    window where it has most context. A window that predicts no word is left out."""
    grown = [_grow(sizes, a, b, budget) for a, b in _chunks(sizes, budget, stride)]
    return [Window(left, right, predicted)
            for (left, right), predicted in zip(grown, _predicted_words(sizes, grown)) if predicted]


def sentence_windows(sizes: list[int], lengths: list[int], budget: int, stride: int) -> list[Window]:
    """The windows over one document's sentences (`lengths`: words per sentence), each sentence cut on its own as
    if it were a document: no window holds words of two sentences."""
    windows: list[Window] = []
    for first, stop in pairwise([0, *accumulate(lengths)]):
        windows += [window.shifted(first) for window in document_windows(sizes[first:stop], budget, stride)]
    return windows


def _word_encoder(tokenizer: Tokenizer, budget: int) -> Callable[[str], list[int]]:
    """A word's tokens as they read in running text, from its composed form (NFC), encoded once per distinct word."""
    cache: dict[str, list[int]] = {}

    def encode(word: str) -> list[int]:
        if word not in cache:
            ids = tokenizer.encode_word(unicodedata.normalize("NFC", word))
            if not ids:
                raise ValueError(f"word {word!r} encodes to no tokens")
            cache[word] = ids[:budget]  # a word longer than a window keeps what fits (module docstring)
        return cache[word]

    return encode


def _label_ids(sentences: Sequence[Sentence], labels: LabelSet | None) -> dict[str, int]:
    """The label ids of `labels`, after checking that it holds every tag of the sentences."""
    label_ids = labels.ids if labels is not None else {}
    for s, sentence in enumerate(sentences):
        for w, tag in enumerate(sentence.tags or ()):
            if tag not in label_ids:
                raise ValueError(f"sentence {s} (line {sentence.line + w}): tag {tag} is not in the label set "
                                 f"({labels if labels is not None else 'none given'})")
    return label_ids


def _chunks(sizes: list[int], budget: int, stride: int) -> list[tuple[int, int]]:
    """Cut the words (sizes in tokens) into chunks of about `stride` tokens, one window centred on each; words that
    fit one window are one chunk."""
    if sum(sizes) <= budget:
        return [(0, len(sizes))] if sizes else []
    chunks, a, size = [], 0, 0
    for i, n in enumerate(sizes):
        if i > a and size + n > stride:
            chunks.append((a, i))
            a, size = i, 0
        size += n
    chunks.append((a, len(sizes)))
    return chunks


def _grow(sizes: list[int], a: int, b: int, budget: int) -> tuple[int, int]:
    """Extend the word range [a, b) one word at a time on alternating sides, within the words and `budget`
    tokens."""
    left, right, used = a, b, sum(sizes[a:b])
    grew = True
    while grew:
        grew = False
        if left > 0 and used + sizes[left - 1] <= budget:
            left, used, grew = left - 1, used + sizes[left - 1], True
        if right < len(sizes) and used + sizes[right] <= budget:
            right, used, grew = right + 1, used + sizes[right], True
    return left, right


def _predicted_words(sizes: list[int], windows: list[tuple[int, int]]) -> list[list[int]]:
    """For each window, the words it predicts: each word in the window where it has most context, min(tokens
    before it, tokens after it) within the window, the earliest on ties. Each window visits only its own words, so
    the work is the windows' total length, about max_len / stride visits per word, however long the document: not
    one visit of every window per word."""
    offsets = [0, *accumulate(sizes)]  # offsets[i]: tokens before word i
    best, owner = [-1] * len(sizes), [-1] * len(sizes)
    for k, (left, right) in enumerate(windows):
        for i in range(left, right):
            room = min(offsets[i] - offsets[left], offsets[right] - offsets[i + 1])
            if room > best[i]:
                best[i], owner[i] = room, k
    predicted: list[list[int]] = [[] for _ in windows]
    for i, k in enumerate(owner):
        predicted[k].append(i)
    return predicted


def _example(
    stream: list[tuple[int, int, list[int]]], window: Window, bos: list[int], sentences: Sequence[Sentence],
    label_ids: dict[str, int],
) -> Example:
    """Example over the words of `window` in `stream` (tuples (sentence, word, ids)), after `bos` ([] or [BOS])."""
    input_ids, labels = list(bos), [IGNORE_INDEX] * len(bos)
    positions, words = [], []
    predicted = set(window.predicted)
    for i in range(window.left, window.right):
        s, w, ids = stream[i]
        if i in predicted:
            tags = sentences[s].tags
            positions.append(len(input_ids))
            words.append((s, w))
            labels.append(label_ids[tags[w]] if tags is not None else IGNORE_INDEX)
            labels.extend([IGNORE_INDEX] * (len(ids) - 1))
        else:
            labels.extend([IGNORE_INDEX] * len(ids))
        input_ids.extend(ids)
    return Example(input_ids, labels, positions, words)


def predictions_per_word(
    examples: Sequence[Example], predictions: Sequence[Sequence[T] | None], sentences: Sequence[Sentence]
) -> list[list[T]]:
    """Map per-example predictions (one per entry of Example.positions: a label id, or a row of label scores)
    back to one prediction per word of each sentence.

    Raises ValueError unless every word of every sentence got exactly one prediction.
    """
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
    unset = object()
    per_word: list[list] = [[unset] * len(s.words) for s in sentences]
    for k, (example, predicted) in enumerate(zip(examples, predictions)):
        if predicted is None:
            raise ValueError(f"example {k} got no predictions")
        if len(predicted) != len(example.positions):
            raise ValueError(f"example {k}: {len(predicted)} predictions for {len(example.positions)} words")
        for (s, w), value in zip(example.words, predicted):
            if per_word[s][w] is not unset:
                raise ValueError(f"word {w} of sentence {s} ({sentences[s].words[w]!r}) predicted twice")
            per_word[s][w] = value
    for s, values in enumerate(per_word):
        for w, value in enumerate(values):
            if value is unset:
                raise ValueError(f"word {w} of sentence {s} ({sentences[s].words[w]!r}) got no prediction")
    return per_word


"""Read and write CoNLL column files: one token per line, blank line between sentences.

Accepted layouts (the first token line fixes the column count for the whole file):
  4 columns  `token POS chunk NER`  (the original CoNLL-2003 release)
  2 columns  `token NER`            (WNUT-17, most NER datasets; tabs or spaces)
  1 column   `token`                (raw tokens for inference: tags are None)
Any other count >= 2 also works; NER is always the last column.

Reading rules:
- Columns are separated by runs of spaces or tabs. Trailing spaces, tabs and `\\r` (CRLF files)
  are ignored; a line holding only whitespace is a sentence break, like an empty line.
  A UTF-8 byte-order mark at the start of the file is ignored. Files are UTF-8: other bytes are an error naming
  the line and column.
- Documents. A line whose first column is `-DOCSTART-` starts a new document (and ends a sentence).
  Sentences of one document share `doc_id` and stay in file order (document context needs them), and
  the first sentence after the marker has `doc_start=True` so a writer can put the marker back. A sentence
  before the first `-DOCSTART-` line is a document of its own, so a file without any (WNUT-17's independent
  posts) is read as independent sentences; to give such a file document context, put a `-DOCSTART-` line
  before each document. (Decided line by line, so that `read_tokens` can stream a file of any length.)
- Tags come out as IOB2, whatever `scheme` they are read with (data/schemes.py: auto, iob1, iob2,
  bioes). Entity types are any text without whitespace (`B-PER`, `I-creative-work`). With `labels`
  (a run's LabelSet), a tag of a type the set does not hold is an error naming the set.
- Malformed input raises ConllFormatError naming `file:line`: wrong column count, a line that
  starts with whitespace (empty token), a malformed tag or one the scheme forbids, a document with no
  sentence.

`read_tokens` reads only the token column, lazily, for tagging: the other columns, however many and whatever
they hold, are neither kept nor checked.
"""

import codecs
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from data.labels import LabelSet
from data.schemes import SCHEMES, SchemeError, detect_scheme, to_iob2

DOCSTART = "-DOCSTART-"
_COLUMN_SEP = re.compile(r"[ \t]+")


class ConllFormatError(ValueError):
    """Malformed CoNLL input; the message starts with `file:line:`."""


@dataclass
class Sentence:
    words: list[str]
    tags: list[str] | None = None  # IOB2 tag per word; None when the source had no tag column
    doc_id: int = 0  # sentences of one document share doc_id and are consecutive
    doc_start: bool = False  # a -DOCSTART- line came right before this sentence in its file
    line: int = 0  # 1-based line of the first word in the source file (0: not read from a file)

    def __post_init__(self) -> None:
        if self.tags is not None and len(self.tags) != len(self.words):
            raise ValueError(f"sentence at line {self.line}: {len(self.words)} words but {len(self.tags)} tags")


def document_spans(sentences: Sequence[Sentence]) -> list[tuple[int, int]]:
    """[start, end) of each document: each run of consecutive sentences with one doc_id."""
    bounds = [0] + [s for s in range(1, len(sentences)) if sentences[s].doc_id != sentences[s - 1].doc_id]
    return list(zip(bounds, bounds[1:] + [len(sentences)])) if sentences else []


def read_tokens(path: str | Path) -> Iterator[Sentence]:
    """The sentences of a CoNLL file with their tokens only (tags None), read as they are needed: a file of any
    length streams. Only the first column is read; lines and documents are as read_conll reads them."""
    with open(path, "rb") as f:
        yield from _read_sentences(utf8_lines(f, str(path)), str(path), tokens_only=True)


def read_conll(path: str | Path, scheme: str = "auto", labels: LabelSet | None = None) -> list[Sentence]:
    """Read a CoNLL file into sentences with IOB2 tags (see the module docstring for the rules)."""
    with open(path, "rb") as f:
        return _parse(utf8_lines(f, str(path)), str(path), scheme, labels)


def utf8_lines(stream: BinaryIO, source: str) -> Iterator[str]:
    """The lines of a byte stream as text, broken at `\\n`, `\\r\\n` or `\\r` as a text file's are, without a
    leading byte-order mark. Bytes that are not UTF-8 (a Latin-1 or Windows-1252 file) are an error naming the
    line and the character column, since the decoder alone names neither."""
    number = 0
    for chunk in stream:
        for raw in chunk.splitlines():
            number += 1
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield decode_line(raw, source, number)
            except ConllFormatError as e:
                raise ConllFormatError(f"{e}; if it is Latin-1 or Windows-1252, convert it: "
                                       f"iconv -f cp1252 -t utf-8 {source} > {source}.utf8") from None


def decode_line(raw: bytes, source: str, number: int) -> str:
    """Line `number` of `source` as text. Bytes that are not UTF-8 are an error naming the line and the character
    column, since the decoder alone names neither."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        column = len(raw[: e.start].decode("utf-8")) + 1  # the bytes before the first bad one are UTF-8
        raise ConllFormatError(f"{source}:{number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                               f"{column})") from None


def parse_conll(text: str, source: str = "<text>", scheme: str = "auto", labels: LabelSet | None = None
                ) -> list[Sentence]:
    """Like read_conll, on a string; `source` names it in error messages."""
    return _parse(io.StringIO(text), source, scheme, labels)


def _parse(lines: Iterable[str], source: str, scheme: str, labels: LabelSet | None) -> list[Sentence]:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    sentences = list(_read_sentences(lines, source))
    if sentences and sentences[0].tags is not None:
        if scheme == "auto":
            scheme = detect_scheme(s.tags for s in sentences)
        for sentence in sentences:
            try:
                sentence.tags = to_iob2(sentence.tags, scheme)
            except SchemeError as e:
                raise ConllFormatError(f"{source}:{sentence.line + e.index}: {e}") from None
            if labels is not None:
                _check_types(sentence, labels, source)
    return sentences


def _check_types(sentence: Sentence, labels: LabelSet, source: str) -> None:
    for w, tag in enumerate(sentence.tags):
        if tag not in labels.ids:
            raise ConllFormatError(f"{source}:{sentence.line + w}: tag {tag} is not in the run's label set "
                                   f"({labels}); a type the tagger was not trained on cannot be scored")


def _read_sentences(lines: Iterable[str], source: str, tokens_only: bool = False) -> Iterator[Sentence]:
    """Sentences with the tags exactly as written, one at a time; a sentence's words are on consecutive lines from
    `line`. `tokens_only`: the first column only, whatever the others hold."""
    done: list[Sentence] = []  # sentences ended by the last line read, handed out before the next is read
    n_columns = 0  # fixed by the first token line
    first_token_line = 0
    words: list[str] = []
    tags: list[str] = []
    doc_id = 0
    doc_has_sentence = False  # has the current document produced a sentence yet?
    in_document = False  # has a -DOCSTART- line been read? Before the first, every sentence is its own document
    docstart_line = 0  # line of a -DOCSTART- still waiting for its first sentence, 0 if none

    def error(lineno: int, message: str) -> ConllFormatError:
        return ConllFormatError(f"{source}:{lineno}: {message}")

    def end_sentence(lineno: int) -> None:
        nonlocal words, tags, doc_id, doc_has_sentence, docstart_line
        if not words:
            return
        sentence_tags = tags if n_columns >= 2 else None
        done.append(Sentence(words, sentence_tags, doc_id, docstart_line > 0, lineno - len(words)))
        doc_has_sentence = in_document
        doc_id += not in_document
        docstart_line = 0
        words, tags = [], []

    lineno = 0
    for lineno, raw in enumerate(lines, start=1):
        yield from done
        done.clear()
        line = raw.rstrip(" \t\r\n")
        if not line:
            end_sentence(lineno)
            continue
        fields = _COLUMN_SEP.split(line)
        if fields[0] == DOCSTART:
            end_sentence(lineno)
            if docstart_line:
                raise error(docstart_line, f"{DOCSTART} starts a document with no sentence")
            if doc_has_sentence:
                doc_id += 1
                doc_has_sentence = False
            docstart_line, in_document = lineno, True
            continue
        if fields[0] == "":
            raise error(lineno, f"line starts with whitespace (empty token): {raw.rstrip()!r}")
        if tokens_only:
            words.append(fields[0])
            continue
        if n_columns == 0:
            n_columns, first_token_line = len(fields), lineno
        elif len(fields) != n_columns:
            raise error(
                lineno,
                f"expected {n_columns} columns (as on line {first_token_line}), got {len(fields)}: {line!r}",
            )
        if n_columns >= 2:
            tags.append(fields[-1])
        words.append(fields[0])
    end_sentence(lineno + 1)
    yield from done
    if docstart_line:
        raise error(docstart_line, f"{DOCSTART} starts a document with no sentence")


def write_conll(path: str | Path, sentences: Sequence[Sentence], columns: Sequence[Sequence[Sequence[str]]]) -> None:
    """Write `word col1 col2 ...` per line, a blank line after each sentence.

    `columns[c][i]` is the tag list of column c for sentence i. Sentences with doc_start get a
    `-DOCSTART- O ...` line (and a blank line) before them, with as many columns as the word
    lines: the original `-DOCSTART- -X- O O` shape adapted to this file's column count, since
    conlleval rejects lines whose column count differs.
    """
    with open(path, "w", encoding="utf-8") as f:
        write_sentences(f, sentences, columns)


def write_sentences(f: TextIO, sentences: Sequence[Sentence], columns: Sequence[Sequence[Sequence[str]]]) -> None:
    """write_conll's lines, to an open text stream: standard output, or a file written a piece at a time."""
    for c, column in enumerate(columns):
        if len(column) != len(sentences):
            raise ValueError(f"column {c} has tags for {len(column)} sentences, expected {len(sentences)}")
    docstart = " ".join([DOCSTART] + ["O"] * len(columns)) + "\n\n"
    for i, sentence in enumerate(sentences):
        for c, column in enumerate(columns):
            if len(column[i]) != len(sentence.words):
                raise ValueError(
                    f"column {c}, sentence {i} (line {sentence.line}): "
                    f"{len(column[i])} tags for {len(sentence.words)} words"
                )
        if sentence.doc_start:
            f.write(docstart)
        for w, word in enumerate(sentence.words):
            if word == "" or _COLUMN_SEP.search(word) or "\n" in word:
                raise ValueError(f"sentence {i} (line {sentence.line}), word {w}: {word!r} cannot be a CoNLL token")
            f.write(" ".join([word] + [column[i][w] for column in columns]) + "\n")
        f.write("\n")


def write_conlleval(path: str | Path, sentences: Sequence[Sentence], predictions: Sequence[Sequence[str]]) -> None:
    """Write the conlleval input format, `token gold pred` per line (gold from sentence.tags)."""
    gold = []
    for i, sentence in enumerate(sentences):
        if sentence.tags is None:
            raise ValueError(f"sentence {i} (line {sentence.line}) has no gold tags to write")
        gold.append(sentence.tags)
    write_conll(path, sentences, [gold, predictions])

"""Read and write CoNLL column files: one token per line, blank line between sentences.

Accepted layouts (the first token line fixes the column count for the whole file):
  4 columns  `token POS chunk NER`  (the original CoNLL-2003 release)
  2 columns  `token NER`
  1 column   `token`                (raw tokens for inference: tags are None)
Any other count >= 2 also works; NER is always the last column.

Reading rules:
- Columns are separated by runs of spaces or tabs. Trailing spaces, tabs and `\\r` (CRLF files)
  are ignored; a line holding only whitespace is a sentence break, like an empty line.
  A UTF-8 byte-order mark at the start of the file is ignored.
- A line whose first column is `-DOCSTART-` starts a new document (and ends a sentence).
  Sentences of one document share `doc_id` and stay in file order (document context needs
  them), and the first sentence after the marker has `doc_start=True` so a writer can put the
  marker back.
- Tags come out as IOB2. `scheme="iob1"` (the original release) converts I-X that opens an
  entity to B-X; valid IOB2 passes through that conversion unchanged, so IOB2 files read
  correctly under either setting. `scheme="iob2"` additionally rejects an I-X that does not
  continue an X entity, the only continuation error that exists in IOB2. In IOB1 no sequence
  is a continuation error (train.txt even has B-MISC right after O, which reads as a start).
- Malformed input raises ConllFormatError naming `file:line`: wrong column count, a line that
  starts with whitespace (empty token), an unknown tag, a document with no sentence.
"""

import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from data.labels import check_tag, first_iob2_violation, iob1_to_iob2

DOCSTART = "-DOCSTART-"
Scheme = Literal["iob1", "iob2"]
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


def read_conll(path: str | Path, scheme: Scheme = "iob1") -> list[Sentence]:
    """Read a CoNLL file into sentences with IOB2 tags (see the module docstring for the rules)."""
    with open(path, encoding="utf-8-sig") as f:
        return _parse(f, str(path), scheme)


def parse_conll(text: str, source: str = "<text>", scheme: Scheme = "iob1") -> list[Sentence]:
    """Like read_conll, on a string; `source` names it in error messages."""
    return _parse(io.StringIO(text), source, scheme)


def _parse(lines: Iterable[str], source: str, scheme: Scheme) -> list[Sentence]:
    if scheme not in ("iob1", "iob2"):
        raise ValueError(f"scheme must be 'iob1' or 'iob2', got {scheme!r}")
    sentences: list[Sentence] = []
    n_columns = 0  # fixed by the first token line
    first_token_line = 0
    words: list[str] = []
    tags: list[str] = []
    word_lines: list[int] = []
    doc_id = 0
    doc_has_sentence = False  # has the current document produced a sentence yet?
    docstart_line = 0  # line of a -DOCSTART- still waiting for its first sentence, 0 if none

    def error(lineno: int, message: str) -> ConllFormatError:
        return ConllFormatError(f"{source}:{lineno}: {message}")

    def end_sentence() -> None:
        nonlocal words, tags, word_lines, doc_has_sentence, docstart_line
        if not words:
            return
        sentence_tags = None
        if n_columns >= 2:
            if scheme == "iob2" and (bad := first_iob2_violation(tags)) is not None:
                previous = tags[bad - 1] if bad > 0 else "sentence start"
                raise error(
                    word_lines[bad],
                    f"{tags[bad]} after {previous} does not continue an entity, which IOB2 forbids "
                    "(read the file with scheme='iob1' if it is IOB1)",
                )
            sentence_tags = iob1_to_iob2(tags)
        sentences.append(Sentence(words, sentence_tags, doc_id, docstart_line > 0, word_lines[0]))
        doc_has_sentence = True
        docstart_line = 0
        words, tags, word_lines = [], [], []

    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip(" \t\r\n")
        if not line:
            end_sentence()
            continue
        fields = _COLUMN_SEP.split(line)
        if fields[0] == DOCSTART:
            end_sentence()
            if docstart_line:
                raise error(docstart_line, f"{DOCSTART} starts a document with no sentence")
            if doc_has_sentence:
                doc_id += 1
                doc_has_sentence = False
            docstart_line = lineno
            continue
        if fields[0] == "":
            raise error(lineno, f"line starts with whitespace (empty token): {raw.rstrip()!r}")
        if n_columns == 0:
            n_columns, first_token_line = len(fields), lineno
        elif len(fields) != n_columns:
            raise error(
                lineno,
                f"expected {n_columns} columns (as on line {first_token_line}), got {len(fields)}: {line!r}",
            )
        if n_columns >= 2:
            try:
                check_tag(fields[-1])
            except ValueError as e:
                raise error(lineno, str(e)) from None
            tags.append(fields[-1])
        words.append(fields[0])
        word_lines.append(lineno)
    end_sentence()
    if docstart_line:
        raise error(docstart_line, f"{DOCSTART} starts a document with no sentence")
    return sentences


def write_conll(path: str | Path, sentences: Sequence[Sentence], columns: Sequence[Sequence[Sequence[str]]]) -> None:
    """Write `word col1 col2 ...` per line, a blank line after each sentence.

    `columns[c][i]` is the tag list of column c for sentence i. Sentences with doc_start get a
    `-DOCSTART- O ...` line (and a blank line) before them, with as many columns as the word
    lines: the original `-DOCSTART- -X- O O` shape adapted to this file's column count, since
    conlleval rejects lines whose column count differs.
    """
    for c, column in enumerate(columns):
        if len(column) != len(sentences):
            raise ValueError(f"column {c} has tags for {len(column)} sentences, expected {len(sentences)}")
    docstart = " ".join([DOCSTART] + ["O"] * len(columns)) + "\n\n"
    with open(path, "w", encoding="utf-8") as f:
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

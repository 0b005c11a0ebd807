"""Tag text with a trained run: a thin command line over the Python API of tag/tagger.py.

    python -m tag.predict --run RUN_DIR "Peter Blackburn works for the EU in Brussels ."
    echo "one text per line" | python -m tag.predict --run RUN_DIR
    python -m tag.predict --run RUN_DIR --conll FILE [--out FILE]
    python -m tag.predict --run RUN_DIR --html entities.html "text" ...   (or texts on stdin)

Plain text gives one JSON line per input text: its entities with type, surface text, code-point offsets
(`text[start:end]` in Python) and score, the probability that exactly this span is an entity of this type. Standard
input is read lazily, `STREAM_CHUNK` lines at a time, and each chunk's lines are written (and flushed) before the next
is read, so a pipe of any length streams. A line that is not valid UTF-8 is an error naming it; the lines before and
after it are answered, and the exit code is 2. `--html FILE` also writes the texts with their entities highlighted
(tag/html.py), once every text is tagged: the page holds them all, so it suits what a person reads, not a long pipe;
a line that was not text keeps its place there as its error.

CoNLL in gives CoNLL out, `token tag`, with a progress bar on stderr. Only the first column, the token, is read:
any other columns (tags of any scheme, POS, nothing at all) are neither kept nor checked. The file streams too:
whole documents are tagged `CONLL_CHUNK_WORDS` words or so at a time, each written before the next is read. Without
`--out` the output goes to standard output as the shell opened it (`>> all.tagged` appends); `--out FILE` appears
whole once every sentence is tagged, never half written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import BinaryIO, TextIO

from data.conll import Sentence, decode_line, read_tokens, write_sentences
from model.files import atomic_file, replaceable
from predictor.predictor import Predictor
from tag.html import entities_page
from tag.tagger import Entity, EntityTagger, load_tagger

STREAM_CHUNK = 64  # stdin lines tagged together: batches fill up, and each answer waits for at most 63 others
CONLL_CHUNK_WORDS = 8192  # CoNLL words tagged together, in whole documents: memory holds one chunk (or one document)


def read_lines(stream: BinaryIO, source: str = "<stdin>") -> Iterator[str | ValueError]:
    """The lines of a byte stream, one at a time, as text without the line break. A line that is not valid UTF-8
    comes as a ValueError naming it, in its place, so that the lines after it are read too."""
    for number, raw in enumerate(stream, start=1):
        try:
            yield decode_line(raw.removesuffix(b"\n").removesuffix(b"\r"), source, number)
        except ValueError as e:
            yield e


def chunked(items: Iterable[str | ValueError], size: int) -> Iterator[list[str | ValueError]]:
    """Lists of `size` items (the last may be shorter), each taken only once the one before has been handled."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def document_chunks(sentences: Iterable[Sentence], words: int) -> Iterator[list[Sentence]]:
    """Runs of whole documents of at least `words` words (the last may hold fewer): a document is tagged with its
    sentences around each one, so it is never cut."""
    chunk: list[Sentence] = []
    count = 0
    for sentence in sentences:
        if chunk and count >= words and sentence.doc_id != chunk[-1].doc_id:
            yield chunk
            chunk, count = [], 0
        chunk.append(sentence)
        count += len(sentence.words)
    if chunk:
        yield chunk


def tag_texts(tagger: EntityTagger, texts: Iterable[str | ValueError],
              page: list[tuple[str, list[Entity]] | ValueError] | None = None) -> int:
    """One JSON line of entities per text, chunk by chunk; an error (a line that was not text) is named on stderr
    in its place. Each text and its entities, or the error, is also appended to `page` if given. The exit code: 2
    if any text failed, else 0."""
    failed = False
    for chunk in chunked(texts, STREAM_CHUNK):
        answers = iter(tagger.tag([text for text in chunk if isinstance(text, str)]))
        for text in chunk:
            if isinstance(text, ValueError):
                print(f"error: {text}", file=sys.stderr)
                failed = True
                answer = text
            else:
                answer = (text, next(answers))
                print(json.dumps({"text": text, "entities": [vars(e) for e in answer[1]]}, ensure_ascii=False))
            if page is not None:
                page.append(answer)
        sys.stdout.flush()
    return 2 if failed else 0


def tag_conll(predictor: Predictor, source: str, out: TextIO) -> None:
    """Tag a CoNLL file into `out`, whole documents at a time, each chunk written (and flushed) as it is tagged. Each
    chunk's progress bar names the line it starts on."""
    for chunk in document_chunks(read_tokens(source), CONLL_CHUNK_WORDS):
        tags = predictor.tag(chunk, progress=f"{source}:{chunk[0].line}").tags
        write_sentences(out, chunk, [tags])
        out.flush()


@contextlib.contextmanager
def conll_output(path: str | None) -> Iterator[TextIO]:
    """Standard output as the shell opened it, never reopened by name (/dev/stdout opened for writing truncates a
    file the shell opened for appending); or the file `path`, which appears whole once every line is written."""
    if path is None:
        yield sys.stdout
        return
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yield f


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tag.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory written by `python -m train`")
    parser.add_argument("--conll", help="a CoNLL file to tag (first column: tokens; any other columns are ignored)")
    parser.add_argument("--out", help="file to write the tagged CoNLL to (default: standard output)")
    parser.add_argument("--html", help="also write the texts with their entities highlighted to this HTML file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", help="base checkpoint folder, if it moved since training")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction,
                        help="int8 matmuls on a CPU with VNNI or AMX: twice as fast, a little less accurate "
                             "(tag/quantize.py); default: off")
    parser.add_argument("texts", nargs="*", help="texts to tag; read from stdin (one per line) when none")
    args = parser.parse_args(argv)
    if args.conll and args.texts:
        parser.error("give either --conll FILE or texts, not both")
    if args.out and not args.conll:
        parser.error("--out is for --conll output; JSON lines go to standard output")
    if args.html and args.conll:
        parser.error("--html is for texts; `python -m tag.evaluate --html` shows a CoNLL file's gold and predicted "
                     "entities")
    if args.out and not replaceable(args.out):
        parser.error(f"--out {args.out}: not a regular file, which --out replaces once it is written whole; "
                     "without --out the output goes to standard output")
    if args.html and not replaceable(args.html):
        parser.error(f"--html {args.html}: not a regular file, which --html replaces once the page is written whole")

    try:
        tagger = load_tagger(args.run, device=args.device, model=args.model, int8=args.int8)
        if not args.conll:
            page: list[tuple[str, list[Entity]] | ValueError] | None = [] if args.html else None
            code = tag_texts(tagger, args.texts or read_lines(sys.stdin.buffer), page)
            if args.html:
                with atomic_file(args.html) as tmp:
                    tmp.write_text(entities_page(page, tagger.types, title=f"Entities: {args.run}"), encoding="utf-8")
            return code
        with conll_output(args.out) as out:
            tag_conll(tagger.predictor, args.conll, out)
    except (OSError, ValueError) as e:  # errors name the file and line, or the text
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

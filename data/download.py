"""Fetch CoNLL-2003 as released, with its documents, and find the data directory.

    python -m data.download [--out DIR]

Source: the archive that the Hugging Face hub's own `conll2003` dataset (eriktks/conll2003) reads in its loading
script, conll2003.zip with train.txt / valid.txt / test.txt: four columns `token POS chunk NER` (IOB1 or IOB2
tags, which data.conll reads alike) and the -DOCSTART- line of every document. Copies that the hub serves as rows (parquet, or tner/conll2003's JSON lines)
keep the sentences but drop those lines, and without them every sentence is a document of its own: document
context, and the default recipe that trains with it, would be another recipe than the README's. So the archive's
files are checked against the published counts of documents, sentences, tokens and entities of each split and
refused when one differs; then they are written unchanged.
"""

import argparse
import io
import os
import sys
import zipfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple
from urllib.request import urlopen

from data.conll import ConllFormatError, parse_conll
from model.files import DownloadError, atomic_file

URL = "https://data.deepai.org/conll2003.zip"  # the `_URL` of eriktks/conll2003's conll2003.py


class Counts(NamedTuple):
    """What Tjong Kim Sang and De Meulder (2003) publish of each split; its sentences less the -DOCSTART- lines."""
    documents: int
    sentences: int
    tokens: int
    LOC: int
    MISC: int
    ORG: int
    PER: int


PUBLISHED = {
    "train.txt": Counts(946, 14041, 203621, LOC=7140, MISC=3438, ORG=6321, PER=6600),
    "valid.txt": Counts(216, 3250, 51362, LOC=1837, MISC=922, ORG=1341, PER=1842),
    "test.txt": Counts(231, 3453, 46435, LOC=1668, MISC=702, ORG=1661, PER=1617),
}
DEFAULT_DIR = Path(__file__).resolve().parent / "conll2003"  # data/conll2003/, git-ignored
ENV_VAR = "CONLL_DIR"
TIMEOUT_S = 60


def download(out: str | Path = DEFAULT_DIR) -> Path:
    """Write train.txt, valid.txt and test.txt under `out`, each checked against PUBLISHED; return `out`.
    Nothing is written unless all three are the release's."""
    out = Path(out)
    try:
        with urlopen(URL, timeout=TIMEOUT_S) as response:
            archive = response.read()
    except OSError as e:  # URLError and timeouts are OSErrors
        raise DownloadError(f"could not fetch {URL} (offline, or the site is unreachable?): {e}") from e
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as z:
            files = {name: _read_member(z, name) for name in PUBLISHED}
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{URL} is not a zip archive ({e})") from None

    counts = {name: _counts(f"{URL}#{name}", content) for name, content in files.items()}
    for name, found in counts.items():
        differ = [f"{field} {n} (published: {p})" for field, n, p in zip(Counts._fields, found, PUBLISHED[name]) if n != p]
        if differ:
            raise DownloadError(f"{URL}#{name}: {', '.join(differ)}: not CoNLL-2003 as released")
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        with atomic_file(out / name) as tmp:
            tmp.write_bytes(content)
        print(f"wrote {out / name}: " + ", ".join(f"{n} {field}" for field, n in counts[name]._asdict().items()))
    return out


def _read_member(z: zipfile.ZipFile, name: str) -> bytes:
    try:
        return z.read(name)
    except KeyError:
        raise DownloadError(f"{URL}: no {name} in it (it holds {', '.join(z.namelist())})") from None


def _counts(source: str, content: bytes) -> Counts:
    """The counts of a CoNLL file; entities as conlleval counts them, -DOCSTART- lines are no sentences."""
    try:
        sentences = parse_conll(content.decode("utf-8"), source)
    except UnicodeDecodeError as e:
        raise DownloadError(f"{source}: not UTF-8 ({e})") from None
    except ConllFormatError as e:
        raise DownloadError(str(e)) from None
    entities = Counter(tag[2:] for s in sentences for tag in s.tags if tag.startswith("B-"))  # IOB2: one B- each
    kinds = Counts._fields[3:]
    if set(entities) - set(kinds):
        raise DownloadError(f"{source}: entity types {', '.join(sorted(set(entities) - set(kinds)))}, "
                            f"not CoNLL-2003's {', '.join(kinds)}")
    return Counts(sum(s.doc_start for s in sentences), len(sentences), sum(len(s.words) for s in sentences),
                  *(entities[kind] for kind in kinds))


def resolve_data_dir(arg: str | None = None, need: tuple[str, ...] = ("train.txt", "valid.txt")) -> Path:
    """The CoNLL directory: `--data DIR` if given, else $CONLL_DIR, else data/conll2003/,
    downloaded there (`download`) when missing. It must hold the files in `need`."""

    def check(where: str, directory: Path) -> Path:
        if not directory.is_dir():
            raise FileNotFoundError(f"{where}: {directory} is not a directory")
        missing = [name for name in need if not (directory / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{where}: {directory} lacks {', '.join(missing)}")
        return directory

    if arg:
        return check("--data", Path(arg))
    if os.environ.get(ENV_VAR):
        return check(f"${ENV_VAR}", Path(os.environ[ENV_VAR]))
    if all((DEFAULT_DIR / name).is_file() for name in need):
        return DEFAULT_DIR
    try:
        download(DEFAULT_DIR)
    except DownloadError as e:
        raise FileNotFoundError(
            f"no CoNLL-2003 data: --data not given, ${ENV_VAR} not set, {DEFAULT_DIR} lacks "
            f"{', '.join(need)}, and downloading it failed: {e}"
        ) from e
    return check("downloaded", DEFAULT_DIR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Download CoNLL-2003 as released ({URL}), with its documents.")
    parser.add_argument("--out", default=str(DEFAULT_DIR), help="directory for train.txt, valid.txt, test.txt")
    args = parser.parse_args(argv)
    try:
        download(args.out)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

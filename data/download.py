"""Fetch CoNLL-2003 from the Hugging Face hub as CoNLL files, and find the data directory.

    python -m data.download [--out DIR]

Source: the hub dataset `tner/conll2003` at a pinned revision, chosen because its splits are
plain JSON lines ({"tokens": [...], "tags": [...]}, integer tags named by dataset/label.json)
that the standard library reads; the hub's `conll2003` (eriktks/conll2003) serves parquet,
which would need pyarrow. The tags are IOB2. They are
written as 2-column `token tag` files train.txt / valid.txt / test.txt, which data.conll reads.
Hub copies keep the sentences (14,041 / 3,250 / 3,453) but not the original -DOCSTART-
document boundaries, so document context on them runs across articles; use the original
release (4 columns, IOB1, with -DOCSTART-) when you have it.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from data.conll import Sentence, write_conll
from data.labels import LabelSet
from model.files import atomic_file

REPO_ID = "tner/conll2003"
REVISION = "b18612dee0007b1f7129731dbf2f5f2ed4039ad3"
LABEL_FILE = "dataset/label.json"
SPLIT_FILES = {"train.txt": "dataset/train.json", "valid.txt": "dataset/valid.json", "test.txt": "dataset/test.json"}
DEFAULT_DIR = Path(__file__).resolve().parent / "conll2003"  # data/conll2003/, git-ignored
ENV_VAR = "CONLL_DIR"


class DownloadError(RuntimeError):
    """The hub could not be reached or served something unexpected."""


def download(out: str | Path = DEFAULT_DIR) -> Path:
    """Write train.txt, valid.txt and test.txt under `out`; return `out`."""
    out = Path(out)

    def fetch(filename: str) -> Path:
        try:
            return Path(hf_hub_download(REPO_ID, filename, repo_type="dataset", revision=REVISION))
        except (OSError, EntryNotFoundError) as e:
            raise DownloadError(
                f"could not fetch {filename} of hub dataset {REPO_ID}@{REVISION[:8]} "
                f"(offline, or the hub is unreachable?): {e}"
            ) from e

    label_path = fetch(LABEL_FILE)
    label_to_id = json.loads(label_path.read_text(encoding="utf-8"))
    id_to_label = {int(i): label for label, i in label_to_id.items()}
    try:
        LabelSet(tuple(id_to_label[i] for i in sorted(id_to_label)))
    except ValueError as e:
        raise DownloadError(f"{label_path}: {e}") from None

    out.mkdir(parents=True, exist_ok=True)
    for name, filename in SPLIT_FILES.items():
        sentences = _read_json_lines(fetch(filename), id_to_label)
        with atomic_file(out / name) as tmp:
            write_conll(tmp, sentences, [[s.tags for s in sentences]])
        print(f"wrote {out / name}: {len(sentences)} sentences, {sum(len(s.words) for s in sentences)} tokens")
    return out


def _read_json_lines(path: Path, id_to_label: dict[int, str]) -> list[Sentence]:
    sentences = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                words, tag_ids = record["tokens"], record["tags"]
                tags = [id_to_label[int(t)] for t in tag_ids]
                sentences.append(Sentence(words, tags, line=lineno))
            except (ValueError, KeyError, TypeError) as e:
                raise DownloadError(f"{path}:{lineno}: unexpected record ({type(e).__name__}: {e})") from None
    return sentences


def resolve_data_dir(arg: str | None = None, need: tuple[str, ...] = ("train.txt", "valid.txt")) -> Path:
    """The CoNLL directory: `--data DIR` if given, else $CONLL_DIR, else data/conll2003/,
    downloaded there when missing and the hub is reachable. It must hold the files in `need`."""

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
    parser = argparse.ArgumentParser(description=f"Download CoNLL-2003 ({REPO_ID} on the Hugging Face hub).")
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

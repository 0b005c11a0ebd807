"""Files that appear whole or not at all: written under a temporary name beside their final one, then renamed;
and JSON files read with errors that name them.

A rename within a folder is atomic, so a kill at any moment leaves either the old file (or folder) or the new one,
never a torn one. Every room that writes something a later run reads (checkpoints, adapters, run settings,
converted weights, exports, datasets) writes it through these two helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; once the block has written it, it replaces `path`.

        with atomic_file(run_dir / "run.json") as tmp:
            tmp.write_text(...)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; once the block has filled it, it takes the place of `path`.

    An existing `path` is moved aside first and removed only after the swap. The folder gets the permissions of
    any new folder (mkdtemp's are private), its files those of any new file.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        _use_default_permissions(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rename(path, old / path.name)
            os.rename(tmp, path)
            shutil.rmtree(old)
        else:
            os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _use_default_permissions(folder: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.rglob("*"):
        file.chmod((0o777 if file.is_dir() else 0o666) & ~umask)


def read_json(path: str | Path) -> Any:
    """The parsed contents of a JSON file; a missing file or invalid JSON is an error naming the file (and line)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None

"""Files that appear whole or not at all: written under a temporary name beside their final one, then renamed;
JSON files read with errors that name them; and the error of a download that failed.

A rename within a folder is atomic, so a kill at any moment leaves either the old file (or folder) or the new one,
never a torn one. A folder is replaced only when it holds nothing but the files its writer writes: no command
removes what it did not create. Every room that writes something a later run reads (checkpoints, adapters, run
settings, converted weights, exports, datasets) writes it through these two helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator
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


def replaceable(path: str | Path) -> bool:
    """Whether `atomic_file(path)` writes what the user means: `path` is absent or a regular file. A symlink would
    be replaced by a file rather than written through, and a folder or a device (/dev/stdout) cannot be replaced."""
    path = Path(path)
    return not path.is_symlink() and (path.is_file() or not path.exists())


@contextlib.contextmanager
def atomic_folder(path: str | Path, owned: Collection[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; once the block has filled it, it takes the place of `path`.

    `owned` names the files this writer writes. An existing `path` is replaced only when it holds nothing else (no
    other file, no subfolder): a user's notes in it, a run directory or a checkout given by mistake are refused
    with an error naming the folder, before the block and again just before the swap, and nothing is touched.

    The swap is two renames (a folder that is not empty cannot be renamed over): `path` to `.NAME.old`, then the
    new folder to `path`; then the old one's `owned` files are removed. A kill between the two renames leaves no
    `path` but the old folder whole at `.NAME.old`: readers find it through `current_folder`, and the next write
    puts it back first (or, killed after the swap, removes what is left of it). The folder gets the permissions of
    any new folder (mkdtemp's are private), its files those of any new file.
    """
    path = Path(path).absolute()
    _finish_swap(path, owned)
    _check_replaceable(path, owned)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        _use_default_permissions(tmp)
        _check_replaceable(path, owned)  # the block may have taken hours
        if path.exists() and any(path.iterdir()):
            old = _aside(path)
            os.rename(path, old)
            os.rename(tmp, path)
            _remove(old, owned)
        else:
            os.rename(tmp, path)  # an empty folder is replaced by the rename itself
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def current_folder(path: str | Path) -> Path:
    """Where the folder that `atomic_folder` keeps at `path` is now: `path`, or the previous folder still aside
    when a kill stopped a swap between its two renames. Readers use it; it changes nothing on disk."""
    path = Path(path)
    old = _aside(path)
    return old if not path.exists() and old.is_dir() else path


def _aside(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _finish_swap(path: Path, owned: Collection[str]) -> None:
    """Complete a swap a kill interrupted: put the old folder back, or remove it once the new one is in place."""
    old = _aside(path)
    if not old.is_dir():
        return
    if path.exists():
        _remove(old, owned)
    else:
        os.rename(old, path)


def _check_replaceable(path: Path, owned: Collection[str]) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{path}: exists and is not a folder")
    foreign = sorted(p.name + "/" * p.is_dir() for p in path.iterdir() if p.name not in owned or p.is_dir())
    if foreign:
        raise FileExistsError(f"{path}: holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, which "
                              f"this command does not write; it replaces only a folder of its own files "
                              f"({', '.join(owned)})")


def _remove(folder: Path, owned: Collection[str]) -> None:
    """Remove `owned` files and then the folder; anything else in it stops the removal."""
    for name in owned:
        (folder / name).unlink(missing_ok=True)
    folder.rmdir()


def _use_default_permissions(folder: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.rglob("*"):
        file.chmod((0o777 if file.is_dir() else 0o666) & ~umask)


def read_json(path: str | Path) -> Any:
    """The parsed contents of a JSON file; a missing file, bytes that are not UTF-8 or invalid JSON is an error naming
    the file (and line)."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))  # decoded whole, so a bad byte's offset is the file's
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None


class DownloadError(RuntimeError):
    """A download (data/download.py, weights/download.py) failed, or fetched something other than what was asked
    for, for a reason the user can fix; the message says which and how."""

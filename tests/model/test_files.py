"""model/files.py: a file or folder appears whole or not at all, an error or a kill leaves the old one whole, and a
folder is replaced only when it holds nothing but the files its writer writes."""

from __future__ import annotations

import os
import stat

import pytest

from model.files import atomic_file, atomic_folder, current_folder, read_json

OWNED = ("config.json", "model.safetensors")


def test_atomic_file_replaces_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as tmp:
            tmp.write_text("half writ")
            assert path.read_text() == "old"  # the new content is not visible before the block ends
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["run.json"]
    with atomic_file(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["run.json"]


def test_atomic_folder_swaps_a_whole_folder_in(tmp_path):
    target = tmp_path / "export"
    with pytest.raises(RuntimeError):
        with atomic_folder(target, OWNED) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("killed mid-write")
    assert os.listdir(tmp_path) == []
    for content in ("first", "second"):
        with atomic_folder(target, OWNED) as tmp:
            assert not any(tmp.iterdir())
            (tmp / "model.safetensors").write_text(content)
            (tmp / "config.json").write_text(content)
        assert (target / "model.safetensors").read_text() == content
    assert os.listdir(tmp_path) == ["export"] and sorted(os.listdir(target)) == ["config.json", "model.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's private 0o700
    assert stat.S_IMODE((target / "model.safetensors").stat().st_mode) == 0o666 & ~umask


def write_folder(target, content: str) -> None:
    with atomic_folder(target, OWNED) as tmp:
        (tmp / "model.safetensors").write_text(content)


def test_atomic_folder_replaces_only_a_folder_of_its_own_files(tmp_path):
    """The user's notes, a subfolder, or a whole checkout are never moved or removed: the write is refused."""
    target = tmp_path / "export"
    target.mkdir()
    write_folder(target, "into an empty folder")
    assert os.listdir(target) == ["model.safetensors"]
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"{target}: .*notes.txt"):
        write_folder(target, "over the notes")
    (target / "notes.txt").unlink()
    (target / "runs").mkdir()
    with pytest.raises(FileExistsError, match=f"{target}: .*runs"):
        write_folder(target, "over a folder")
    assert (target / "runs").is_dir() and (target / "model.safetensors").read_text() == "into an empty folder"
    (tmp_path / "file").write_text("mine")
    with pytest.raises(FileExistsError, match="not a folder"):
        write_folder(tmp_path / "file", "over a file")

    def a_user_adds_a_file_meanwhile(target):  # the folder is checked again just before the swap
        with atomic_folder(target, OWNED) as tmp:
            (tmp / "model.safetensors").write_text("late")
            (target / "notes.txt").write_text("mine")

    (target / "runs").rmdir()
    with pytest.raises(FileExistsError, match="notes.txt"):
        a_user_adds_a_file_meanwhile(target)
    assert sorted(os.listdir(target)) == ["model.safetensors", "notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["export", "file"]


def killed_at(monkeypatch, function: str, call: int) -> None:
    """Make the `call`-th call of os.`function` die as a kill would (KeyboardInterrupt), the others run."""
    real, calls = getattr(os, function), []

    def dying(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(os, function, dying)


def test_a_kill_between_the_two_renames_leaves_the_old_folder_readable(tmp_path, monkeypatch):
    """The old folder is moved aside, the new one renamed in: a kill between the two leaves no folder at `path`, but
    readers find the old one, whole, and the next write puts it back before replacing it."""
    target = tmp_path / "adapter"
    write_folder(target, "old")
    with monkeypatch.context() as patched:
        killed_at(patched, "rename", 2)
        with pytest.raises(KeyboardInterrupt):
            write_folder(target, "new")
    assert not target.exists()
    assert (current_folder(target) / "model.safetensors").read_text() == "old"
    write_folder(target, "newer")
    assert current_folder(target) == target and (target / "model.safetensors").read_text() == "newer"
    assert os.listdir(tmp_path) == ["adapter"]


def test_a_kill_after_the_swap_leaves_the_new_folder(tmp_path, monkeypatch):
    target = tmp_path / "adapter"
    write_folder(target, "old")
    with monkeypatch.context() as patched:
        killed_at(patched, "rmdir", 1)  # the old folder's files are gone, the folder itself not yet
        with pytest.raises(KeyboardInterrupt):
            write_folder(target, "new")
    assert (current_folder(target) / "model.safetensors").read_text() == "new"
    write_folder(target, "newer")
    assert os.listdir(tmp_path) == ["adapter"] and (target / "model.safetensors").read_text() == "newer"


def test_read_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"hidden_size": 576}')
    assert read_json(path) == {"hidden_size": 576}
    path.write_text('{\n  "hidden_size": 576,\n}')
    with pytest.raises(ValueError, match=f"{path}:3: not valid JSON"):
        read_json(path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere.json'}: file not found"):
        read_json(tmp_path / "nowhere.json")
    path.write_bytes('{"name": "Jos\u00e9"}'.encode("latin-1"))  # a config.json saved as Latin-1
    with pytest.raises(ValueError, match=f"^{path}: not valid UTF-8 \\(byte 0xe9 at offset 13\\)$"):
        read_json(path)

"""model/files.py: a file or folder appears whole or not at all, and an error leaves the old one untouched."""

from __future__ import annotations

import os
import stat

import pytest

from model.files import atomic_file, atomic_folder, read_json


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
        with atomic_folder(target) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("killed mid-write")
    assert os.listdir(tmp_path) == []
    for content in ("first", "second"):
        with atomic_folder(target) as tmp:
            assert not any(tmp.iterdir())
            (tmp / "model.safetensors").write_text(content)
            (tmp / "sub").mkdir()
        assert (target / "model.safetensors").read_text() == content
    assert os.listdir(tmp_path) == ["export"] and sorted(os.listdir(target)) == ["model.safetensors", "sub"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask  # not mkdtemp's private 0o700
    assert stat.S_IMODE((target / "model.safetensors").stat().st_mode) == 0o666 & ~umask


def test_read_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"hidden_size": 576}')
    assert read_json(path) == {"hidden_size": 576}
    path.write_text('{\n  "hidden_size": 576,\n}')
    with pytest.raises(ValueError, match=f"{path}:3: not valid JSON"):
        read_json(path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere.json'}: file not found"):
        read_json(tmp_path / "nowhere.json")

"""train/run_dir.py: what a run directory holds is kept safe on resume: a log line cut short by a kill is dropped,
a corrupt one is named by file and line; the base weights a run started from are told from others of their shape."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from train.run_dir import METRICS_FILE, truncate_log
from train.sources import weights_fingerprint


def log_lines(*steps: int) -> str:
    return "".join(json.dumps({"type": "train", "step": step, "loss": 1.0 / step}) + "\n" for step in steps)


def test_resume_drops_a_last_line_cut_short_by_a_kill(tmp_path, capsys):
    path = tmp_path / METRICS_FILE
    path.write_text(log_lines(1, 10, 20) + '{"type": "train", "st')  # killed while the record of step 30 was written
    truncate_log(tmp_path, 20)
    assert path.read_text() == log_lines(1, 10, 20)
    assert f"{path}:4: " in capsys.readouterr().err
    path.write_text(log_lines(1, 10, 20) + '{"type": "train", "st')
    truncate_log(tmp_path, 10)
    assert path.read_text() == log_lines(1, 10)


@pytest.mark.parametrize("content, line", [
    (log_lines(1) + '{"type": "train", "st\n' + log_lines(10), 2),  # torn, then written on: not the last line
    (log_lines(1, 10) + "not json\n", 3),  # ends with a newline: written whole, so not cut short
    (log_lines(1) + '{"type": "train"}\n', 2),  # no step
])
def test_a_corrupt_line_is_an_error_naming_the_file_and_line(tmp_path, content, line):
    path = tmp_path / METRICS_FILE
    path.write_text(content)
    with pytest.raises(ValueError, match=f"{path}:{line}: "):
        truncate_log(tmp_path, 10)
    assert path.read_text() == content


def checkpoint(folder, seed: int, shards: int = 1):
    """A checkpoint folder of random float32 tensors, in one file or `shards` files with an index."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {f"model.layers.{i}.mlp.up_proj.weight": torch.randn(256, 128, generator=generator) for i in range(4)}
    folder.mkdir()
    if shards == 1:
        save_file(tensors, folder / "model.safetensors")
        return folder
    names = sorted(tensors)
    weight_map = {name: f"model-{i % shards + 1:05d}-of-{shards:05d}.safetensors" for i, name in enumerate(names)}
    for file in set(weight_map.values()):
        save_file({n: tensors[n] for n in names if weight_map[n] == file}, folder / file)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


@pytest.mark.parametrize("shards", [1, 2])
def test_the_weights_fingerprint_tells_checkpoints_of_one_shape_apart(tmp_path, shards):
    first = checkpoint(tmp_path / "first", seed=0, shards=shards)
    other = checkpoint(tmp_path / "other", seed=1, shards=shards)  # the same names, dtypes and shapes
    copy = shutil.copytree(first, tmp_path / "copy")
    assert weights_fingerprint(first) == weights_fingerprint(copy) != weights_fingerprint(other)

"""train/run_dir.py: what a run directory holds is kept safe on resume: a log line cut short by a kill is dropped,
a corrupt one is named by file and line."""

from __future__ import annotations

import json

import pytest

from train.run_dir import METRICS_FILE, truncate_log


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

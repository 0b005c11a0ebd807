"""A test that needs a real dataset finds it ($CONLL_DIR / $WNUT_DIR, else shared/ beside the checkout) or fails
with a message saying where it looked; it never skips, so a clone without the data cannot pass the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/data/test_conll.py::test_real_train_set_statistics", "tests/data/test_conll.py::test_wnut17_files_read"]


def run_pytest(conll: Path, wnut: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONLL_DIR": str(conll), "WNUT_DIR": str(wnut)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *TESTS], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_missing_data_fails_loudly_and_names_the_folder(tmp_path):
    result = run_pytest(tmp_path / "no-conll", tmp_path / "no-wnut")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "skipped" not in output and "2 errors" in output, output
    assert f"CoNLL-2003 is not at {tmp_path / 'no-conll'} (no train.txt, valid.txt)" in output, output
    assert f"WNUT-17 is not at {tmp_path / 'no-wnut'} (no train.txt, valid.txt)" in output, output
    assert "set $CONLL_DIR" in output and "set $WNUT_DIR" in output, output


def test_the_data_folders_come_from_the_environment(tmp_path, conll_dir, wnut_dir):
    folders = {"conll": tmp_path / "conll", "wnut": tmp_path / "wnut"}
    for name, source in (("conll", conll_dir), ("wnut", wnut_dir)):
        folders[name].mkdir()
        for split in ("train.txt", "valid.txt"):
            (folders[name] / split).symlink_to(source / split)
    result = run_pytest(folders["conll"], folders["wnut"])
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout + result.stderr

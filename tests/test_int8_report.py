"""The output of a test run says which int8 kernel the tagger-level int8 tests ran: torch._int_mm, or on a CPU
without int8 dot-product instructions the exact float64 stand-in of tests/conftest.py's `int8_anywhere`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tag.quantize import int8_is_fast

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/tag/test_quantize.py::test_int8_is_a_cpu_choice"  # asks for int8_anywhere, needs no data


def test_the_summary_names_the_int8_kernel_that_ran():
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-ra", "-p", "no:cacheprovider", TEST], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.rpartition("int8 kernel")[2]
    if int8_is_fast():
        assert "torch._int_mm ran in 1 test" in summary, result.stdout
    else:
        assert "exact_int_mm (float64) stood in for torch._int_mm in 1 test" in summary, result.stdout
        assert "no int8 dot-product instructions" in summary, result.stdout

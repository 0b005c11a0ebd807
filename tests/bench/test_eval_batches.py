"""bench/eval_batches.py: every view at every budget, the same predictions, and a mismatch refused."""

import re

import pytest

from bench import eval_batches
from tests.conll_data import needs_conll


@needs_conll
def test_eval_batches_times_every_view_at_every_budget(trained_run, conll_slice, capsys):
    argv = ["--run", str(trained_run), "--data", str(conll_slice / "valid.txt"), "--limit", "12",
            "--budgets", "2048", "256"]
    assert eval_batches.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("12 sentences from ")
    for view in ("documents", "alone", "bare"):
        for budget in (2048, 256):
            assert re.search(rf"^{view} +{budget} +\d+ +[\d.]+ +\d+ +[\d.]+x$", out, re.MULTILINE), out


def test_a_prediction_that_moves_with_the_batch_is_refused():
    same = [[[-0.1, -2.3]], [[-1.0, -0.5]]]
    eval_batches.check_same(same, [[[-0.1, -2.3]], [[-1.0, -0.5004]]], "alone view")
    with pytest.raises(AssertionError, match="alone view: log-probabilities differ .* by 1.00e-02"):
        eval_batches.check_same(same, [[[-0.1, -2.3]], [[-1.01, -0.5]]], "alone view")

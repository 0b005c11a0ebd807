"""bench/tagging.py: every way of tagging runs end to end on a few texts and the table names each."""

import re

from bench import tagging
from tests.conll_data import needs_conll


@needs_conll
def test_tagging_bench_runs_every_system(trained_run, conll_slice, capsys, int8_anywhere):
    assert tagging.main(["--run", str(trained_run), "--data", str(conll_slice / "valid.txt"), "--limit", "6"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 texts from ")
    for name in ("api", "api, int8", "predict", "pipeline"):
        assert re.search(rf"^{name} +[\d.]+ +[\d.]+ +\d+ +[\d.]+x", out, re.MULTILINE), out
    assert re.search(r"^api .* \d+\.\d%$", out, re.MULTILINE) and "cold start of tag.predict" in out

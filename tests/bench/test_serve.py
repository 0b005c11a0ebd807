"""bench/serve.py: the offline API and the service at 1, 8 and 64 clients, one table, every answer checked."""

import re

from bench import serve
from tests.conll_data import needs_conll


@needs_conll
def test_serving_bench_measures_every_system_and_checks_every_answer(random_run, conll_slice, capsys):
    assert serve.main(["--run", str(random_run), "--data", str(conll_slice / "valid.txt"), "--limit", "80"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("80 texts from ")
    for name in ("api, one call", "api, chunks of 64", "serve, 1 client", "serve, 8 clients", "serve, 64 clients"):
        assert re.search(rf"^{name} +[\d.]+ +[\d.]+ +\d+ +[\d.]+ +[\d.]+$", out, re.MULTILINE), out
    assert re.search(r"^serve at 64 clients / api in one call, tokens/s: [\d.]+x \(target: at least 0.8x\)$", out,
                     re.MULTILINE), out
    assert "answers of the service equal to the API's: 80 of 80 at 1, 80 of 80 at 8, 80 of 80 at 64 clients" in out


def test_a_differing_answer_is_told_apart():
    entity = serve.Entity("PER", "Peter", 0, 5, 0.9)
    answer = [{"type": "PER", "text": "Peter", "start": 0, "end": 5, "score": 0.90005}]
    assert serve.same(answer, [entity])
    for key, value in (("type", "ORG"), ("text", "Pete"), ("start", 1), ("end", 4), ("score", 0.9002)):
        assert not serve.same([{**answer[0], key: value}], [entity]), key
    assert not serve.same(answer * 2, [entity]) and not serve.same([], [entity])

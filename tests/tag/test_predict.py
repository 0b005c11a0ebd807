"""tag/predict.py: raw text in, entities with character offsets out; CoNLL in, CoNLL out."""

from __future__ import annotations

import json

from data.conll import read_conll
from data.labels import LABELS
from tag import predict as predict_cli
from tests.conll_data import needs_conll


@needs_conll
def test_predict_cli_gives_entities_with_character_offsets(trained_run, capsys):
    text = "Peter Blackburn met officials of the European Commission in Brussels on Monday ."
    assert predict_cli.main(["--run", str(trained_run), text, ""]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    first, empty = (json.loads(line) for line in lines)
    assert first["text"] == text and empty == {"text": "", "entities": []}
    assert first["entities"], "the tagger found no entity in an easy sentence"
    for entity in first["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["text"]
        assert entity["type"] in {"PER", "ORG", "LOC", "MISC"}


@needs_conll
def test_predict_cli_conll_in_conll_out(trained_run, conll_slice, tmp_path):
    out = tmp_path / "tagged.txt"
    assert predict_cli.main(["--run", str(trained_run), "--conll", str(conll_slice / "valid.txt"),
                             "--out", str(out)]) == 0
    gold = read_conll(conll_slice / "valid.txt")
    tagged = read_conll(out, scheme="iob2")
    assert [s.words for s in tagged] == [s.words for s in gold]
    assert all(tag in LABELS for s in tagged for tag in s.tags)



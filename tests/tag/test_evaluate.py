"""tag/evaluate.py: the command line scores a trained run as training scored it, with either decoder."""

from __future__ import annotations

from data.conll import read_conll
from data.schemes import to_iob2
from tag import evaluate as evaluate_cli
from tests.conll_data import needs_conll, records


@needs_conll
def test_evaluate_cli_scores_and_writes_conlleval_file(trained_run, conll_slice, tmp_path, capsys):
    out = tmp_path / "pred.txt"
    assert evaluate_cli.main(["--run", str(trained_run), "--data", str(conll_slice / "valid.txt"),
                              "--out", str(out)]) == 0
    report = capsys.readouterr().out
    best = max(r["valid_f1"] for r in records(trained_run, "eval"))
    assert f"{best:.2f}" in report
    gold = read_conll(conll_slice / "valid.txt")
    lines = out.read_text().split("\n")
    word_lines = [line for line in lines if line and not line.startswith("-DOCSTART-")]
    assert len(word_lines) == sum(len(s.words) for s in gold)
    assert lines[0] == "-DOCSTART- O O"
    assert all(len(line.split()) == 3 for line in word_lines)
    # The decoder can be chosen at evaluation; both write valid IOB2. Every evaluation also scores each decoder,
    # at training too, and the chosen one is the headline F1.
    by_decoder = max(records(trained_run, "eval"), key=lambda r: r["valid_f1"])["valid_f1_by_decoder"]
    assert set(by_decoder) == {"viterbi", "argmax"} and by_decoder["viterbi"] == best
    for decoder in ("viterbi", "argmax"):
        assert evaluate_cli.main(["--run", str(trained_run), "--data", str(conll_slice / "valid.txt"),
                                  "--out", str(out), "--decode", decoder]) == 0
        report = capsys.readouterr().out
        assert f"F1 by decoder: viterbi {by_decoder['viterbi']:.2f}, argmax {by_decoder['argmax']:.2f}" in report
        assert f"{by_decoder[decoder]:.2f}" in report.split("F1 by decoder")[0]
        blocks = out.read_text().split("\n\n")
        assert all(to_iob2(tags, "iob2") == tags for b in blocks for tags in [[line.split()[2] for line in b.splitlines()]])




@needs_conll
def test_evaluate_cli_refuses_a_file_without_gold_tags(trained_run, tmp_path, capsys):
    raw = tmp_path / "raw.txt"
    raw.write_text("Peter\nBlackburn\n\nBrussels\n")
    assert evaluate_cli.main(["--run", str(trained_run), "--data", str(raw)]) == 2
    assert f"{raw} has no NER column" in capsys.readouterr().err

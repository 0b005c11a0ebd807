"""tag/evaluate.py: the command line scores a trained run as training scored it, with either decoder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from data.conll import read_conll
from data.schemes import to_iob2
from tag import evaluate as evaluate_cli
from tag.run import load_run
from tests.conll_data import needs_conll, records, slice_conll


@needs_conll
def test_evaluate_cli_scores_and_writes_conlleval_file(trained_run, conll_slice, int8_anywhere, tmp_path, capsys):
    out = tmp_path / "pred.txt"
    assert evaluate_cli.main(["--run", str(trained_run), "--data", str(conll_slice / "valid.txt"),
                              "--out", str(out), "--no-int8"]) == 0  # training evaluates in float32
    report = capsys.readouterr().out
    kept = max(records(trained_run, "eval"), key=lambda r: r["valid_mean_f1"])  # the record of the kept adapter
    best = kept["valid_documents_f1"]
    assert f"{best:.2f}" in report and "linear layers: float32" in report
    gold = read_conll(conll_slice / "valid.txt")
    lines = out.read_text().split("\n")
    word_lines = [line for line in lines if line and not line.startswith("-DOCSTART-")]
    assert len(word_lines) == sum(len(s.words) for s in gold)
    assert lines[0] == "-DOCSTART- O O"
    assert all(len(line.split()) == 3 for line in word_lines)
    # The decoder can be chosen at evaluation; both write valid IOB2. Every evaluation also scores each decoder,
    # at training too, and the chosen one is the headline F1.
    by_decoder = kept["valid_documents_f1_by_decoder"]
    assert set(by_decoder) == {"viterbi", "argmax"} and by_decoder["viterbi"] == best
    for decoder in ("viterbi", "argmax"):
        assert evaluate_cli.main(["--run", str(trained_run), "--data", str(conll_slice / "valid.txt"),
                                  "--out", str(out), "--decode", decoder, "--no-int8"]) == 0
        report = capsys.readouterr().out
        assert f"F1 by decoder: viterbi {by_decoder['viterbi']:.2f}, argmax {by_decoder['argmax']:.2f}" in report
        assert f"{by_decoder[decoder]:.2f}" in report.split("F1 by decoder")[0]
        blocks = out.read_text().split("\n\n")
        predicted = [[line.split()[2] for line in block.splitlines()] for block in blocks]
        assert all(to_iob2(tags, "iob2") == tags for tags in predicted)
    # The int8 flag reaches the tagger: its scores are int8's (tests/tag/test_quantize.py compares the two).
    head = slice_conll(conll_slice / "valid.txt", tmp_path / "head.txt", 30)
    assert evaluate_cli.main(["--run", str(trained_run), "--data", str(head), "--int8"]) == 0
    report = capsys.readouterr().out
    int8_run = load_run(trained_run, device="cpu", int8=True)
    int8_f1 = int8_run.tag(read_conll(head)).scores.f1
    assert "linear layers: int8" in report and f1_by_view(report)[0] == pytest.approx(int8_f1, abs=0.005)




def f1_by_view(report: str) -> list[float]:
    line, = (line for line in report.splitlines() if line.startswith("F1 by view: "))
    assert re.fullmatch(r"F1 by view: as documents [\d.]+, sentence by sentence [\d.]+, without final punctuation "
                        r"[\d.]+", line), line
    return [float(x) for x in re.findall(r"\d+\.\d+", line)]


def rewrite(source: Path, out: Path, drop_final_punctuation: bool) -> Path:
    """The file again with a -DOCSTART- before every sentence, optionally without each sentence's trailing
    punctuation lines (tag O): an independent way to put each sentence alone."""
    blocks = [b for b in source.read_text().split("\n\n") if b.strip() and not b.startswith("-DOCSTART-")]
    kept = []
    for block in blocks:
        lines = block.strip("\n").split("\n")
        while drop_final_punctuation and len(lines) > 1 and lines[-1].split()[0] in PUNCTUATION \
                and lines[-1].split()[-1] == "O":
            lines.pop()
        kept.append("-DOCSTART- -X- O O\n\n" + "\n".join(lines))
    out.write_text("\n\n".join(kept) + "\n")
    return out


PUNCTUATION = {".", "?", "!", '"', "'", ":", ";", ",", "...", "-", "(", ")"}


@needs_conll
def test_evaluate_and_training_report_three_views(trained_run, conll_slice, tmp_path, capsys):
    valid = conll_slice / "valid.txt"
    assert evaluate_cli.main(["--run", str(trained_run), "--data", str(valid), "--no-int8"]) == 0
    documents, alone, bare = f1_by_view(capsys.readouterr().out)
    for path, expected in ((rewrite(valid, tmp_path / "alone.txt", False), alone),
                           (rewrite(valid, tmp_path / "bare.txt", True), bare)):
        assert evaluate_cli.main(["--run", str(trained_run), "--data", str(path), "--no-int8"]) == 0
        assert f1_by_view(capsys.readouterr().out)[0] == expected, path.name
    kept = max(records(trained_run, "eval"), key=lambda r: r["valid_mean_f1"])
    assert [kept[f"valid_{view}_f1"] for view in ("documents", "alone", "bare")] == pytest.approx(
        [documents, alone, bare], abs=0.005)
    assert kept["valid_mean_f1"] == pytest.approx((documents + alone + bare) / 3, abs=0.01)
    assert set(kept["valid_bare_per_type_f1"]) == set(kept["valid_documents_per_type_f1"])
    for subset in records(trained_run, "subset_eval"):
        assert {"valid_alone_f1", "valid_bare_f1", "valid_mean_f1"} <= set(subset)


@needs_conll
def test_evaluate_cli_refuses_a_file_without_gold_tags(trained_run, tmp_path, capsys):
    raw = tmp_path / "raw.txt"
    raw.write_text("Peter\nBlackburn\n\nBrussels\n")
    assert evaluate_cli.main(["--run", str(trained_run), "--data", str(raw)]) == 2
    assert f"{raw} has no NER column" in capsys.readouterr().err


def test_evaluate_cli_names_the_line_of_a_malformed_file_and_a_missing_one(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B_ORG\n")
    assert evaluate_cli.main(["--run", str(trained_run), "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:3: malformed tag 'B_ORG'") and "Traceback" not in err
    assert evaluate_cli.main(["--run", str(trained_run), "--data", str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in capsys.readouterr().err

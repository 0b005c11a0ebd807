"""tag/predict.py: raw text in, entities with character offsets out; CoNLL in, CoNLL out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from data.conll import parse_conll, read_conll
from data.labels import LabelSet
from tag import predict as predict_cli
from tests.conll_data import needs_conll

ROOT = Path(__file__).resolve().parents[2]
LABELS = LabelSet.from_types(["PER", "ORG", "LOC", "MISC"])  # CoNLL-2003's, as a run learns them


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




class CountingStdin:
    """A stdin whose `buffer` yields the given byte lines and counts how many were read."""

    def __init__(self, lines: list[bytes]):
        self.lines, self.read = lines, 0
        self.buffer = self

    def __iter__(self):
        for line in self.lines:
            self.read += 1
            yield line


@needs_conll
def test_predict_streams_stdin_answering_each_chunk_before_reading_on(trained_run, monkeypatch, capsys):
    stdin = CountingStdin([b"Peter Blackburn met EU officials in Brussels .\n"] * 5)
    read_when_written = []
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(predict_cli, "STREAM_CHUNK", 2)
    real_flush = sys.stdout.flush
    monkeypatch.setattr(sys.stdout, "flush", lambda: (read_when_written.append(stdin.read), real_flush()))
    assert predict_cli.main(["--run", str(trained_run)]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 5 and all(json.loads(line)["text"].startswith("Peter") for line in lines)
    assert read_when_written[:3] == [2, 4, 5]  # each chunk of 2 was written before the next one was read


@needs_conll
def test_invalid_utf8_on_stdin_is_named_and_the_lines_around_it_are_answered(trained_run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", CountingStdin([b"Brussels\n", b"\n", b"ok\r\n", b"S\xc3\xa3o \xff\n", b"after\n"]))
    monkeypatch.setattr(predict_cli, "STREAM_CHUNK", 2)  # the bad line in the middle of a chunk
    assert predict_cli.main(["--run", str(trained_run)]) == 2
    out, err = capsys.readouterr()
    assert [json.loads(line)["text"] for line in out.strip().split("\n")] == ["Brussels", "", "ok", "after"]
    assert err.count("error") == 1 and "error: <stdin>:4: not valid UTF-8 (byte 0xff at column 5)\n"  # characters, not bytes in err


@needs_conll
def test_an_over_long_word_on_stdin_is_tagged_and_the_stream_goes_on(trained_run, monkeypatch, capsys):
    lines = [b"Peter Blackburn met EU officials in Brussels .\n", b"Pi is 3." + b"1" * 300 + b"\n",
             "東京".encode() * 100 + b"\n", b"Angela Merkel visited Paris .\n"]
    monkeypatch.setattr(sys, "stdin", CountingStdin(lines))
    assert predict_cli.main(["--run", str(trained_run)]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["text"] for line in out.splitlines()] == [line.decode().strip() for line in lines]
    assert "error" not in err


@needs_conll
def test_predict_conll_shows_its_progress_on_stderr(trained_run, conll_slice, tmp_path, capsys):
    source = conll_slice / "valid.txt"
    assert predict_cli.main(["--run", str(trained_run), "--conll", str(source), "--out", str(tmp_path / "o")]) == 0
    assert str(source) in capsys.readouterr().err


def test_predict_cli_names_the_line_of_a_malformed_conll_file(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("EU B-ORG\n\tB-ORG\n")  # the second line has no token: it starts with a tab
    assert predict_cli.main(["--run", str(trained_run), "--conll", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:2:") and "Traceback" not in err


@needs_conll
@pytest.mark.parametrize("columns", [
    ["NNP", "NNP", "VBD", "NNP", ".", "NNP", "VBZ"],  # token POS
    ["PER", "PER", "O", "LOC", "O", "ORG", "O"],  # IO tags, without B- or I-
    ["NNP B-PER", "NNP I-PER", "VBD", "", "X Y Z", "NNP", "VBZ O"],  # any number of columns, line by line
])
def test_predict_conll_reads_the_token_column_only(trained_run, tmp_path, capsys, columns):
    tokens = ["Peter", "Blackburn", "visited", "Brussels", ".", "EU", "rejects"]
    lines = [f"{token} {rest}".strip() for token, rest in zip(tokens, columns)]
    source = tmp_path / "in.txt"
    source.write_text("-DOCSTART- -X- O\n\n" + "\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]) + "\n")
    out = tmp_path / "out.txt"
    assert predict_cli.main(["--run", str(trained_run), "--conll", str(source), "--out", str(out)]) == 0, \
        capsys.readouterr().err
    tagged = read_conll(out, scheme="iob2")
    assert [s.words for s in tagged] == [tokens[:5], tokens[5:]]
    assert tagged[0].doc_start and all(tag in LABELS for s in tagged for tag in s.tags)
    assert out.read_text().startswith("-DOCSTART- O\n\nPeter ")


@needs_conll
def test_predict_conll_tags_an_over_long_token(trained_run, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text(f"Pi O\nis O\n3.{'1' * 300} O\n\nParis B-LOC\n")
    out = tmp_path / "out.txt"
    assert predict_cli.main(["--run", str(trained_run), "--conll", str(source), "--out", str(out)]) == 0
    assert [s.words for s in read_conll(out, scheme="iob2")] == [["Pi", "is", "3." + "1" * 300], ["Paris"]]


@needs_conll
def test_predict_conll_appends_to_a_file_the_shell_opened_for_appending(trained_run, tmp_path):
    """`predict --conll FILE >> all.tagged`: the shell opens all.tagged for appending, and what was there stays."""
    source = tmp_path / "in.txt"
    source.write_text("Peter B-PER\nBlackburn I-PER\n\nEU B-ORG\nrejects O\n")
    tagged = tmp_path / "all.tagged"
    tagged.write_text("earlier O\nwork O\n\n")
    with open(tagged, "a") as out:
        done = subprocess.run([sys.executable, "-m", "tag.predict", "--run", str(trained_run), "--conll", str(source)],
                              stdout=out, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    sentences = read_conll(tagged, scheme="iob2")
    assert [s.words for s in sentences] == [["earlier", "work"], ["Peter", "Blackburn"], ["EU", "rejects"]]
    assert sentences[0].tags == ["O", "O"]


@needs_conll
def test_predict_conll_writes_each_chunk_before_reading_on(trained_run, conll_slice, monkeypatch, capsys):
    read = []
    real_reader = predict_cli.read_tokens

    def counting_reader(path):
        for sentence in real_reader(path):
            read.append(sentence)
            yield sentence

    monkeypatch.setattr(predict_cli, "read_tokens", counting_reader)
    monkeypatch.setattr(predict_cli, "CONLL_CHUNK_WORDS", 200)
    read_when_written = []
    real_flush = sys.stdout.flush
    monkeypatch.setattr(sys.stdout, "flush", lambda: (read_when_written.append(len(read)), real_flush()))
    source = conll_slice / "valid.txt"
    assert predict_cli.main(["--run", str(trained_run), "--conll", str(source)]) == 0
    gold = read_conll(source)
    assert [s.words for s in parse_conll(capsys.readouterr().out, scheme="iob2")] == [s.words for s in gold]
    assert len(read_when_written) > 3 and read_when_written[0] < len(gold) / 2


@needs_conll
def test_predict_conll_out_is_written_whole_or_not_at_all(trained_run, tmp_path, monkeypatch, capsys):
    source = tmp_path / "in.txt"
    source.write_text("-DOCSTART-\n\nEU B-ORG\nrejects O\n\n-DOCSTART-\n\nPeter B-PER\n\tbad\n")
    out = tmp_path / "out.txt"
    out.write_text("kept\n")
    monkeypatch.setattr(predict_cli, "CONLL_CHUNK_WORDS", 1)  # the first document is tagged before the error
    assert predict_cli.main(["--run", str(trained_run), "--conll", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {source}:9: line starts with whitespace" in err and "Traceback" not in err
    assert out.read_text() == "kept\n" and sorted(tmp_path.iterdir()) == [source, out]


def test_predict_refuses_an_out_it_cannot_replace_whole(tmp_path, capsys):
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for out in ("/dev/stdout", str(tmp_path), str(tmp_path / "link")):
        with pytest.raises(SystemExit) as exit_:
            predict_cli.main(["--run", str(tmp_path), "--conll", "in.txt", "--out", out])
        assert exit_.value.code == 2 and f"--out {out}: not a regular file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict_cli.main(["--run", str(tmp_path), "--out", "x.txt", "a text"])
    assert "--out is for --conll output" in capsys.readouterr().err

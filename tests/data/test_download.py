"""data/download.py: CoNLL-2003 fetched from the hub (replaced here by files on disk) and the data directory."""

import json
import re
from pathlib import Path

import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

import data.download as download_module
from data.conll import read_conll


TNER_LABELS = {"O": 0, "B-ORG": 1, "B-MISC": 2, "B-PER": 3, "I-PER": 4, "B-LOC": 5, "I-ORG": 6, "I-MISC": 7, "I-LOC": 8}


def fake_hub(root: Path, splits: dict[str, list[str]] | None = None, calls: list | None = None):
    """An hf_hub_download stand-in serving tner/conll2003-style files from `root`."""
    splits = splits or {
        "train": ['{"tokens": ["EU", "rejects", "German", "call"], "tags": [1, 0, 2, 0]}',
                  '{"tokens": ["Peter", "Blackburn"], "tags": [3, 4]}'],
        "valid": ['{"tokens": ["BRUSSELS", "1996-08-22"], "tags": [5, 0]}', ""],
        "test": ['{"tokens": ["New", "York", "Times"], "tags": [1, 6, 6]}'],
    }
    files = {"dataset/label.json": json.dumps(TNER_LABELS)}
    files.update({f"dataset/{name}.json": "\n".join(lines) + "\n" for name, lines in splits.items()})

    def hf_hub_download(repo_id, filename, repo_type=None, revision=None):
        assert (repo_id, repo_type, revision) == (download_module.REPO_ID, "dataset", download_module.REVISION)
        if calls is not None:
            calls.append(filename)
        path = root / "hub" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[filename])
        return str(path)

    return hf_hub_download


def offline_hub(repo_id, filename, repo_type=None, revision=None):
    raise LocalEntryNotFoundError("Please check your connection and try again")


def test_download_writes_conll_files(tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "hf_hub_download", fake_hub(tmp_path))
    out = download_module.download(tmp_path / "conll")
    assert sorted(p.name for p in out.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
    train = read_conll(out / "train.txt", scheme="iob2")
    assert [(s.words, s.tags) for s in train] == [
        (["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]
    assert (out / "valid.txt").read_text() == "BRUSSELS B-LOC\n1996-08-22 O\n\n"
    assert read_conll(out / "test.txt")[0].tags == ["B-ORG", "I-ORG", "I-ORG"]


def test_download_rejects_bad_records(tmp_path, monkeypatch):
    bad = {"train": ['{"tokens": ["a"], "tags": [0]}', '{"tokens": ["b"], "tags": [42]}'], "valid": [], "test": []}
    monkeypatch.setattr(download_module, "hf_hub_download", fake_hub(tmp_path, bad))
    with pytest.raises(download_module.DownloadError, match=r"train\.json:2: unexpected record \(KeyError: 42\)"):
        download_module.download(tmp_path / "conll")


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download_module, "hf_hub_download", offline_hub)
    with pytest.raises(download_module.DownloadError, match="offline, or the hub is unreachable"):
        download_module.download(tmp_path / "conll")
    assert download_module.main(["--out", str(tmp_path / "conll")]) == 1
    assert "error: could not fetch dataset/label.json of hub dataset tner/conll2003" in capsys.readouterr().err
    assert not (tmp_path / "conll").exists()


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    for name in ("arg", "env"):
        (tmp_path / name).mkdir()
        for split in ("train.txt", "valid.txt"):
            (tmp_path / name / split).write_text("EU B-ORG\n")
    default = tmp_path / "default"
    monkeypatch.setattr(download_module, "DEFAULT_DIR", default)
    monkeypatch.setenv("CONLL_DIR", str(tmp_path / "env"))
    assert download_module.resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert download_module.resolve_data_dir(None) == tmp_path / "env"
    with pytest.raises(FileNotFoundError, match=re.escape(f"--data: {tmp_path / 'nowhere'} is not a directory")):
        download_module.resolve_data_dir(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=re.escape(f"$CONLL_DIR: {tmp_path / 'env'} lacks test.txt")):
        download_module.resolve_data_dir(None, need=("test.txt",))

    monkeypatch.delenv("CONLL_DIR")
    monkeypatch.setattr(download_module, "hf_hub_download", offline_hub)
    with pytest.raises(FileNotFoundError) as error:
        download_module.resolve_data_dir(None)
    tried = ("--data not given", "$CONLL_DIR not set", f"{default} lacks train.txt, valid.txt", "downloading it failed")
    assert all(part in str(error.value) for part in tried)

    calls: list[str] = []
    monkeypatch.setattr(download_module, "hf_hub_download", fake_hub(tmp_path, calls=calls))
    assert download_module.resolve_data_dir(None) == default
    assert (default / "train.txt").is_file() and len(calls) == 4
    assert download_module.resolve_data_dir(None) == default and len(calls) == 4  # present now: no second download

"""data/download.py: CoNLL-2003's release files, with their documents, checked against the published counts (the
archive is built here from the real files instead of fetched), and the data directory."""

import io
import re
import zipfile
from collections import Counter
from urllib.error import URLError

import pytest

import data.download as download_module
from data.conll import read_conll
from model.files import DownloadError
from tests.conll_data import needs_conll, slice_conll

pytestmark = needs_conll


@pytest.fixture
def release(tmp_path, conll_dir, monkeypatch) -> dict[str, bytes]:
    """The files of the release archive: the real train.txt and valid.txt, and, since the test split is withheld
    here, a stand-in of valid.txt's first 40 sentences, expected at its own counts."""
    slice_conll(conll_dir / "valid.txt", tmp_path / "test.txt", 40)
    stand_in = download_module.Counts(3, 40, 767, LOC=22, MISC=8, ORG=47, PER=40)
    monkeypatch.setitem(download_module.PUBLISHED, "test.txt", stand_in)
    return {"train.txt": (conll_dir / "train.txt").read_bytes(), "valid.txt": (conll_dir / "valid.txt").read_bytes(),
            "test.txt": (tmp_path / "test.txt").read_bytes(), "metadata": b"the archive holds a metadata file too\n"}


def serve(monkeypatch, files: dict[str, bytes], calls: list | None = None) -> None:
    """Answer the download of the archive's URL with a zip of `files`."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)

    def urlopen(url, timeout):
        assert url == download_module.URL and timeout > 0
        if calls is not None:
            calls.append(url)
        return io.BytesIO(archive.getvalue())

    monkeypatch.setattr(download_module, "urlopen", urlopen)


def offline(url, timeout):
    raise URLError("[Errno -3] Temporary failure in name resolution")


def test_download_writes_the_release_files_with_their_documents(tmp_path, release, monkeypatch, capsys):
    serve(monkeypatch, release)
    out = download_module.download(tmp_path / "conll")
    assert sorted(p.name for p in out.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
    for name in ("train.txt", "valid.txt", "test.txt"):
        assert (out / name).read_bytes() == release[name]  # as released: nothing re-tagged or re-tokenised
    train = read_conll(out / "train.txt")
    assert (len(train), sum(s.doc_start for s in train), train[-1].doc_id) == (14041, 946, 945)
    printed = capsys.readouterr().out
    assert (f"wrote {out / 'train.txt'}: 946 documents, 14041 sentences, 203621 tokens, 7140 LOC, 3438 MISC, "
            "6321 ORG, 6600 PER") in printed
    assert f"wrote {out / 'valid.txt'}: 216 documents, 3250 sentences, 51362 tokens, 1837 LOC" in printed


def test_published_counts_are_those_of_the_real_files(conll_dir):
    """Counted here from the real files, as the data's README counts them (its test row: the withheld split)."""
    for name in ("train.txt", "valid.txt"):
        sentences = read_conll(conll_dir / name)
        entities = Counter(tag[2:] for s in sentences for tag in s.tags if tag.startswith("B-"))
        counts = (sum(s.doc_start for s in sentences), len(sentences), sum(len(s.words) for s in sentences),
                  entities["LOC"], entities["MISC"], entities["ORG"], entities["PER"])
        assert download_module.PUBLISHED[name] == counts and sum(entities.values()) == sum(counts[3:])
    assert download_module.PUBLISHED["test.txt"] == (231, 3453, 46435, 1668, 702, 1661, 1617)


@pytest.mark.parametrize("damage, message", [
    (lambda text: text.replace("-DOCSTART- -X- O O\n\n", ""),
     "train.txt: documents 0 (published: 946): not CoNLL-2003 as released"),
    (lambda text: text.replace("EU NNP I-NP I-ORG\nrejects VBZ I-VP O\n", "", 1),
     "train.txt: tokens 203619 (published: 203621), ORG 6320 (published: 6321): not CoNLL-2003 as released"),
    (lambda text: text.replace("German JJ I-NP I-MISC", "German JJ I-NP I-NORP", 1),
     "train.txt: entity types NORP, not CoNLL-2003's LOC, MISC, ORG, PER"),
    (lambda text: text.replace("EU NNP I-NP I-ORG\n", "EU NNP I-NP I-ORG\nrejects I-VP O\n", 1),
     "train.txt:4: expected 4 columns (as on line 3), got 3"),
], ids=["without documents", "two tokens less", "another type", "a malformed line"])
def test_download_refuses_a_copy_that_differs_from_the_release(tmp_path, release, monkeypatch, damage, message):
    release["train.txt"] = damage(release["train.txt"].decode()).encode()
    serve(monkeypatch, release)
    with pytest.raises(DownloadError, match=re.escape(message)):
        download_module.download(tmp_path / "conll")
    assert not (tmp_path / "conll").exists()  # nothing written unless every split is the release's


def test_download_refuses_an_archive_without_a_split_or_not_a_zip(tmp_path, release, monkeypatch):
    del release["test.txt"]
    serve(monkeypatch, release)
    with pytest.raises(DownloadError, match=f"{re.escape(download_module.URL)}: no test.txt in it"):
        download_module.download(tmp_path / "conll")
    monkeypatch.setattr(download_module, "urlopen", lambda url, timeout: io.BytesIO(b"<html>moved</html>"))
    with pytest.raises(DownloadError, match="is not a zip archive"):
        download_module.download(tmp_path / "conll")
    assert not (tmp_path / "conll").exists()


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download_module, "urlopen", offline)
    with pytest.raises(DownloadError, match="offline, or the site is unreachable"):
        download_module.download(tmp_path / "conll")
    assert download_module.main(["--out", str(tmp_path / "conll")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not fetch {download_module.URL}") and err.count("\n") == 1
    assert not (tmp_path / "conll").exists()


def test_resolve_data_dir_order(tmp_path, release, monkeypatch):
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
    monkeypatch.setattr(download_module, "urlopen", offline)
    with pytest.raises(FileNotFoundError) as error:
        download_module.resolve_data_dir(None)
    tried = ("--data not given", "$CONLL_DIR not set", f"{default} lacks train.txt, valid.txt", "downloading it failed")
    assert all(part in str(error.value) for part in tried)

    calls: list[str] = []
    serve(monkeypatch, release, calls)
    assert download_module.resolve_data_dir(None) == default
    assert read_conll(default / "valid.txt")[0].doc_start and len(calls) == 1
    assert download_module.resolve_data_dir(None) == default and len(calls) == 1  # present now: no second download

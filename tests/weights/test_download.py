"""weights.download without a network: hub errors are made by huggingface_hub itself from fake responses."""

import json

import httpx2
import pytest
from huggingface_hub import constants
from huggingface_hub.utils import hf_raise_for_status

from model.files import DownloadError
from weights import download as download_module
from weights.download import ALLOW_PATTERNS, download, main

REPO = "meta-llama/Llama-3.2-1B"


def hub_error(status: int, error_code: str | None = None, error_message: str | None = None) -> Exception:
    """The exception huggingface_hub raises for this HTTP answer to a repo-info request."""
    request = httpx2.Request("GET", f"https://huggingface.co/api/models/{REPO}/revision/main")
    headers = {"X-Error-Code": error_code} if error_code else {}
    if error_message:
        headers["X-Error-Message"] = error_message
    with pytest.raises(Exception) as raised:
        hf_raise_for_status(httpx2.Response(status, request=request, headers=headers))
    return raised.value


def failing_snapshot_download(error: Exception):
    def fake(*args, **kwargs):
        raise error

    return fake


@pytest.mark.parametrize(
    "token, says",
    [(None, "HF_TOKEN is not set"), ("hf_fake", "the account of the token in HF_TOKEN has no access")],
)
def test_gated_repo_tells_to_accept_license_and_set_token(token, says, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(download_module, "snapshot_download", failing_snapshot_download(hub_error(403, "GatedRepo")))
    with pytest.raises(DownloadError) as err:
        download(REPO, tmp_path / "out", token=token)
    message = str(err.value)
    assert "gated" in message and says in message
    assert f"accept its license at https://huggingface.co/{REPO}" in message


@pytest.mark.parametrize(
    "status, server_message",
    [(401, "Invalid credentials in Authorization header"), (403, "Access denied")],
)
def test_refused_token_names_the_status_and_the_fix(status, server_message, monkeypatch, tmp_path):
    error = hub_error(status, error_message=server_message)
    monkeypatch.setattr(download_module, "snapshot_download", failing_snapshot_download(error))
    with pytest.raises(DownloadError, match=rf"refused access to {REPO} \(HTTP {status}\).*HF_TOKEN.*license"):
        download(REPO, tmp_path / "out")


@pytest.mark.parametrize(
    "token, says", [(None, "HF_TOKEN is not set"), ("hf_fake", "the token in HF_TOKEN was refused")]
)
def test_401_may_be_gated_or_missing(token, says, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(download_module, "snapshot_download", failing_snapshot_download(hub_error(401)))
    with pytest.raises(DownloadError, match=rf"HTTP 401\): {says}\. Check the name.*accept its license"):
        download(REPO, tmp_path / "out", token=token)


def test_missing_repo_is_not_found(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(download_module, "snapshot_download", failing_snapshot_download(hub_error(404, "RepoNotFound")))
    with pytest.raises(DownloadError, match=r"meta-llama/nope was not found .*\(HTTP 404\): check the name"):
        download("meta-llama/nope", tmp_path / "out")


def test_other_hub_errors_name_the_status(monkeypatch, tmp_path):
    monkeypatch.setattr(download_module, "snapshot_download", failing_snapshot_download(hub_error(500)))
    with pytest.raises(DownloadError, match="HTTP 500"):
        download(REPO, tmp_path / "out")


def test_offline_is_a_clear_error(monkeypatch, tmp_path):
    """The real snapshot_download, with huggingface_hub's offline switch on: no request leaves."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DownloadError, match="cannot reach the Hugging Face hub"):
        download(REPO, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_success_fetches_checkpoint_files_with_the_token(monkeypatch, tmp_path):
    calls = []

    def fake_snapshot_download(repo_id, *, local_dir, allow_patterns, token):
        calls.append((repo_id, token, allow_patterns))
        local_dir.mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            (local_dir / name).write_text("{}")
        return str(local_dir)

    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    monkeypatch.setattr(download_module, "snapshot_download", fake_snapshot_download)
    out = download(REPO, tmp_path / "out")
    assert out == tmp_path / "out" and (out / "model.safetensors").is_file()
    assert calls == [(REPO, "hf_from_env", ALLOW_PATTERNS)]
    assert {"config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json"} <= set(ALLOW_PATTERNS)


def test_sharded_download_missing_a_shard_is_an_error(monkeypatch, tmp_path):
    def fake_snapshot_download(repo_id, *, local_dir, allow_patterns, token):
        local_dir.mkdir(parents=True)
        (local_dir / "config.json").write_text("{}")
        (local_dir / "tokenizer.json").write_text("{}")
        weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
        (local_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
        (local_dir / "model-00001-of-00002.safetensors").write_text("")
        return str(local_dir)

    monkeypatch.setattr(download_module, "snapshot_download", fake_snapshot_download)
    with pytest.raises(DownloadError, match="lacks model-00002-of-00002.safetensors"):
        download(REPO, tmp_path / "out")


def test_cli_reports_errors_without_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setattr(download_module, "snapshot_download", failing_snapshot_download(hub_error(403, "GatedRepo")))
    with pytest.raises(SystemExit) as exit_info:
        main(["--repo", REPO, "--out", str(tmp_path / "out")])
    assert str(exit_info.value).startswith("error: ") and "gated" in str(exit_info.value)

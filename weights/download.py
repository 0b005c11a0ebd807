"""Download an HF checkpoint folder: config, safetensors weights and tokenizer files, nothing else.

The default, meta-llama/Llama-3.2-1B, is gated: accept its license on the model page with your
Hugging Face account, then pass a token of that account in HF_TOKEN.

    HF_TOKEN=hf_... python -m weights.download [--repo meta-llama/Llama-3.2-1B] [--out weights/llama-3.2-1b]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)

from model.files import DownloadError

DEFAULT_REPO = "meta-llama/Llama-3.2-1B"
DEFAULT_OUT = Path(__file__).resolve().parent / "llama-3.2-1b"
# What model/loading.py and model/tokenizer.py read; skips the original/ consolidated.pth copy.
ALLOW_PATTERNS = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
]


def download(repo_id: str = DEFAULT_REPO, out_dir: str | Path = DEFAULT_OUT, token: str | None = None) -> Path:
    """Fetch repo_id's checkpoint files into out_dir (resuming a partial download) and check them."""
    out_dir = Path(out_dir)
    token = token or os.environ.get("HF_TOKEN") or None
    page = f"https://huggingface.co/{repo_id}"
    try:
        snapshot_download(repo_id, local_dir=out_dir, allow_patterns=ALLOW_PATTERNS, token=token)
    except GatedRepoError as err:
        who = "the account of the token in HF_TOKEN has" if token else "HF_TOKEN is not set, so you have"
        raise DownloadError(
            f"{repo_id} is a gated repository and {who} no access: accept its license at {page}, "
            "then set HF_TOKEN to a token of that account (https://huggingface.co/settings/tokens)"
        ) from err
    except RepositoryNotFoundError as err:
        status = err.response.status_code
        if status == 401:  # the hub answers 401 alike for missing, private and gated repos without login
            login = "the token in HF_TOKEN was refused" if token else "HF_TOKEN is not set"
            raise DownloadError(
                f"the hub refused {repo_id} (HTTP 401): {login}. "
                f"Check the name; if the repository is gated, accept its license at {page} and set HF_TOKEN "
                "to a token of that account (https://huggingface.co/settings/tokens)"
            ) from err
        raise DownloadError(
            f"repository {repo_id} was not found on the Hugging Face hub (HTTP {status}): check the name"
            + ("" if token else "; if it is private, set HF_TOKEN to a token with access")
        ) from err
    except HfHubHTTPError as err:
        status = err.response.status_code
        if status in (401, 403):
            raise DownloadError(
                f"the hub refused access to {repo_id} (HTTP {status}): check that HF_TOKEN holds a valid token "
                f"whose account accepted the license at {page}"
            ) from err
        raise DownloadError(f"the hub answered HTTP {status} for {repo_id}: {err}") from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise DownloadError(
            f"cannot reach the Hugging Face hub to download {repo_id} (offline, or HF_HUB_OFFLINE=1?) "
            "and it is not downloaded yet; connect and run again"
        ) from err
    missing = missing_files(out_dir)
    if missing:
        raise DownloadError(f"{out_dir}: the download of {repo_id} lacks {', '.join(missing)}; run it again")
    return out_dir


def missing_files(checkpoint_dir: Path) -> list[str]:
    """What a checkpoint folder still needs: config, every weight shard, a tokenizer."""
    missing = [] if (checkpoint_dir / "config.json").is_file() else ["config.json"]
    index = checkpoint_dir / "model.safetensors.index.json"
    if index.is_file():
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        missing += [shard for shard in shards if not (checkpoint_dir / shard).is_file()]
    elif not (checkpoint_dir / "model.safetensors").is_file():
        missing.append("model.safetensors")
    if not any((checkpoint_dir / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        missing.append("tokenizer.json or tokenizer.model")
    return missing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=DEFAULT_REPO, help=f"hub repository (default: {DEFAULT_REPO})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        out_dir = download(args.repo, args.out)
    except DownloadError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"downloaded {args.repo} to {out_dir}")


if __name__ == "__main__":
    main()

"""tag/export.py: both export layouts load in transformers (+ peft) and give our tagger's logits."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from data.labels import LabelSet
from lora.inject import lora_modules
from predictor.run_dir import ADAPTER_DIR, TAGGING_FILE, save_tuned
from tests.hf_reference import make_hf_checkpoint
from tests.random_weights import randomize_tuned
from tag.export import ExportError, export_run, main
from tag.run import load_run
from train.build import build_tagger
from train.config import TrainConfig
from train.run_dir import write_run_info

TINY = dict(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)

LABELS = LabelSet.from_types(["PER", "ORG", "LOC", "MISC"])  # CoNLL-2003's, as a run learns them


def make_run(root: Path, smollm2_dir: Path, causal: bool, tie: bool, bidirectional_top_layers: int = 0) -> Path:
    """A run directory as training leaves it, with random non-zero LoRA B and head (no training)."""
    base = make_hf_checkpoint(root / "base", tie_word_embeddings=tie, **TINY)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_dir / name, base / name)
    run_dir = root / "run"
    run_dir.mkdir()
    # alpha / r = 3: a scaling of 1 or alpha alone would show in the logits.
    config = TrainConfig(model=str(base), out=str(run_dir), causal=causal, lora_r=4, lora_alpha=12.0,
                         bidirectional_top_layers=bidirectional_top_layers, device="cpu")
    tagger = build_tagger(config, len(LABELS), torch.device("cpu"))
    randomize_tuned(tagger, seed=1)
    write_run_info(run_dir, config, LABELS, sources={})  # not trained: no data, no base to record
    save_tuned(tagger, run_dir, config.finetune)
    return run_dir


@pytest.fixture(scope="module")
def bidirectional_run(tmp_path_factory, smollm2_dir) -> Path:
    return make_run(tmp_path_factory.mktemp("bidirectional"), smollm2_dir, causal=False, tie=True)


@pytest.fixture(scope="module")
def causal_run(tmp_path_factory, smollm2_dir) -> Path:
    return make_run(tmp_path_factory.mktemp("causal"), smollm2_dir, causal=True, tie=False)


def right_padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, TINY["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    return ids, mask


def our_logits(run_dir: Path) -> torch.Tensor:
    ids, mask = right_padded_batch()
    with torch.no_grad():
        return load_run(run_dir, device="cpu").tagger(ids, mask)


def their_logits(model) -> torch.Tensor:
    ids, mask = right_padded_batch()
    with torch.no_grad():
        return model.float().eval()(input_ids=ids, attention_mask=mask).logits


def assert_same_logits(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Equal at the real (unpadded) positions, to 1e-4 of the logit scale."""
    _, mask = right_padded_batch()
    real = mask.bool()
    scale = ours[real].abs().max().item()
    torch.testing.assert_close(theirs[real], ours[real], atol=1e-4 * scale, rtol=0)


def run_readme(out: Path):
    """Execute the Python block of the export's README and return the `model` it builds."""
    text = (out / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, text
    namespace: dict = {}
    exec(blocks[0], namespace)  # noqa: S102 -- our own generated README, run as a user would
    return namespace["model"]


@pytest.mark.parametrize("run_name", ["bidirectional_run", "causal_run"])
def test_peft_export_reproduces_our_logits(run_name, request, tmp_path):
    run_dir = request.getfixturevalue(run_name)
    out = export_run(run_dir, tmp_path / "peft", "peft")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["task_type"], config["r"], config["lora_alpha"]) == ("TOKEN_CLS", 4, 12.0)
    assert config["modules_to_save"] == ["score"]

    model = run_readme(out)  # PeftModel over LlamaForTokenClassification.from_pretrained(base, ...)
    assert isinstance(model, peft.PeftModel)
    assert getattr(model.config, "is_causal", True) == (run_name == "causal_run")
    assert model.config.id2label == dict(enumerate(LABELS))
    # Exactly the keys PEFT itself saves for this model: nothing missing, nothing ignored.
    assert set(load_file(out / "adapter_model.safetensors")) == set(peft.get_peft_model_state_dict(model))
    assert_same_logits(our_logits(run_dir), their_logits(model))


@pytest.mark.parametrize("run_name", ["bidirectional_run", "causal_run"])
def test_merged_export_reproduces_our_logits(run_name, request, tmp_path):
    run_dir = request.getfixturevalue(run_name)
    causal = run_name == "causal_run"
    out = export_run(run_dir, tmp_path / "merged", "merged")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForTokenClassification"]
    assert config["id2label"] == {str(i): label for i, label in enumerate(LABELS)}
    assert config["label2id"] == {label: i for i, label in enumerate(LABELS)}
    assert config["is_causal"] is causal
    assert config["hidden_size"] == TINY["hidden_size"]
    keys = set(load_file(out / "model.safetensors"))
    assert {"score.weight", "score.bias", "model.embed_tokens.weight"} <= keys
    assert not any("lora" in k or "lm_head" in k for k in keys)

    model = run_readme(out)
    assert isinstance(model, transformers.LlamaForTokenClassification)
    ours = our_logits(run_dir)
    assert_same_logits(ours, their_logits(model))
    if not causal:  # the check above can tell the two attention kinds apart
        causal_model = transformers.LlamaForTokenClassification.from_pretrained(out, is_causal=True)
        with pytest.raises(AssertionError):
            assert_same_logits(ours, their_logits(causal_model))


def test_fully_fine_tuned_run_exports_merged_only(tmp_path, smollm2_dir):
    """--finetune full: every weight trained, saved whole, reloaded strictly, exported as a complete checkpoint."""
    base = make_hf_checkpoint(tmp_path / "base", tie_word_embeddings=True, **TINY)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_dir / name, base / name)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = TrainConfig(model=str(base), out=str(run_dir), finetune="full", device="cpu")
    tagger = build_tagger(config, len(LABELS), torch.device("cpu"))
    assert not lora_modules(tagger) and all(p.requires_grad for p in tagger.parameters())
    torch.manual_seed(1)
    with torch.no_grad():
        for p in tagger.parameters():  # as if every weight had been trained
            p.add_(torch.randn_like(p) * 0.05)
    write_run_info(run_dir, config, LABELS, sources={})  # not trained: no data, no base to record
    save_tuned(tagger, run_dir, config.finetune)
    assert sorted(p.name for p in run_dir.iterdir()) == ["finetuned.safetensors", "run.json", TAGGING_FILE]
    ids, mask = right_padded_batch()
    with torch.no_grad():
        trained = tagger.eval()(ids, mask)
    assert_same_logits(our_logits(run_dir), trained)  # reloaded from the run directory

    model = run_readme(export_run(run_dir, tmp_path / "merged", "merged"))
    assert_same_logits(trained, their_logits(model))
    with pytest.raises(ExportError, match="use --format merged"):
        export_run(run_dir, tmp_path / "peft", "peft")

    saved = load_file(run_dir / "finetuned.safetensors")
    saved.pop("head.bias")
    save_file(saved, run_dir / "finetuned.safetensors")
    with pytest.raises(ValueError, match="missing tensor 'head.bias'"):
        load_run(run_dir, device="cpu")


def test_merge_leaves_the_run_unchanged(bidirectional_run, tmp_path):
    before = load_file(bidirectional_run / ADAPTER_DIR / "adapter.safetensors")
    export_run(bidirectional_run, tmp_path / "merged", "merged")
    after = load_file(bidirectional_run / ADAPTER_DIR / "adapter.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # exporting twice from the same run gives the same weights (nothing was merged twice)
    export_run(bidirectional_run, tmp_path / "again", "merged")
    first, second = load_file(tmp_path / "merged/model.safetensors"), load_file(tmp_path / "again/model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_refuses_to_overwrite_a_non_empty_folder(bidirectional_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        export_run(bidirectional_run, out, "peft")
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(FileExistsError, match=f"{out}: .*not a llama-ner export"):
        export_run(bidirectional_run, out, "peft", force=True)  # --force replaces an earlier export, nothing else
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    export_run(bidirectional_run, out, "merged")
    export_run(bidirectional_run, out, "peft", force=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left behind


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_force_never_replaces_the_run_or_what_the_user_keeps(tmp_path, smollm2_dir):
    """--out naming the run itself, a folder holding it, or a folder of the user's own files is refused with
    --force too, and every file stays as it was."""
    run_dir = make_run(tmp_path, smollm2_dir, causal=False, tie=True)
    before = listing(tmp_path)
    for out, why in ((run_dir, "is the run directory"), (tmp_path, "holds the run directory")):
        with pytest.raises(ExportError, match=f"{out} {why} {run_dir}"):
            export_run(run_dir, out, "merged", force=True)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")  # a name exports write, but not an export
    with pytest.raises(FileExistsError, match=f"{mine}: .*not a llama-ner export"):
        export_run(run_dir, mine, "peft", force=True)
    assert listing(tmp_path) == before | {"mine/README.md": b"my notes"}


def test_a_kill_while_the_adapter_is_replaced_loses_no_adapter(tmp_path, smollm2_dir, monkeypatch):
    """Killed between the two renames that replace adapter/ (model/files.py), the run still loads and exports the
    adapter it had, and the next save of the adapter puts the folder back in place."""
    run_dir = make_run(tmp_path, smollm2_dir, causal=False, tie=True)
    run = load_run(run_dir, device="cpu", merge=False)
    logits = our_logits(run_dir)
    real_rename = os.rename

    def killed_after_the_first_rename(src, dst):
        real_rename(src, dst)
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(os, "rename", killed_after_the_first_rename)
        with pytest.raises(KeyboardInterrupt):
            save_tuned(run.tagger, run_dir, run.settings.finetune)
    assert not (run_dir / ADAPTER_DIR).exists()
    assert torch.equal(our_logits(run_dir), logits)
    export_run(run_dir, tmp_path / "peft", "peft")
    save_tuned(run.tagger, run_dir, run.settings.finetune)
    assert sorted(p.name for p in run_dir.iterdir()) == [ADAPTER_DIR, "run.json", TAGGING_FILE]
    assert torch.equal(our_logits(run_dir), logits)


def test_a_failed_export_leaves_nothing(bidirectional_run, tmp_path, monkeypatch):
    def broken(_):
        raise RuntimeError("disk full")

    monkeypatch.setattr("tag.export.merged_state_dict", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(bidirectional_run, tmp_path / "out", "merged")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["peft", "merged"])
def test_causal_run_with_bidirectional_top_layers_is_refused(fmt, tmp_path, smollm2_dir):
    run_dir = make_run(tmp_path, smollm2_dir, causal=True, tie=True, bidirectional_top_layers=1)
    with pytest.raises(ExportError, match="bidirectional_top_layers=1"):
        export_run(run_dir, tmp_path / "out", fmt)
    assert not (tmp_path / "out").exists()


def test_bad_run_directory_and_format(bidirectional_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        export_run(tmp_path / "nowhere", tmp_path / "out", "peft")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    shutil.copy(bidirectional_run / TAGGING_FILE, incomplete / TAGGING_FILE)
    with pytest.raises(FileNotFoundError, match="adapter"):
        export_run(incomplete, tmp_path / "out", "peft")
    with pytest.raises(ValueError, match="unknown export format 'onnx'"):
        export_run(bidirectional_run, tmp_path / "out", "onnx")


def test_command_line(bidirectional_run, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--run", str(bidirectional_run), "--out", str(out), "--format", "merged"]) == 0
    assert (out / "model.safetensors").exists()
    assert main(["--run", str(bidirectional_run), "--out", str(out), "--format", "merged"]) == 2
    assert "not empty" in capsys.readouterr().err
    base = json.loads((bidirectional_run / TAGGING_FILE).read_text())["settings"]["model"]
    assert main(["--run", str(bidirectional_run), "--out", str(out), "--format", "peft", "--model", base,
                 "--force"]) == 0
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    with pytest.raises(SystemExit):
        main(["--run", str(bidirectional_run), "--out", str(out), "--format", "gguf"])

"""tag/run.py: a run directory reloads into the tagger training kept, with LoRA merged into the weights."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from data.conll import read_conll
from data.labels import LabelSet
from lora.inject import lora_modules
from lora.io import WEIGHTS_NAME
from predictor.run_dir import ADAPTER_DIR, FINETUNED_NAME, TAGGING_FILE, save_tuned
from tag import evaluate as evaluate_cli
from tag import predict as predict_cli
from tag.run import load_run
from tests.conll_data import needs_conll, records
from train.build import build_tagger
from train.config import TrainConfig
from train.run_dir import write_run_info


@needs_conll
def test_merged_tagger_tags_as_the_one_with_separate_adapters(trained_run, conll_slice):
    sentences = read_conll(conll_slice / "valid.txt")
    results = {}
    for merge in (True, False):
        run = load_run(trained_run, device="cpu", merge=merge)
        assert all(m.merged == merge for _, m in lora_modules(run.tagger)) and not run.tagger.training
        results[merge] = run.tag(sentences)
    assert results[True].tags == results[False].tags
    assert results[True].loss == pytest.approx(results[False].loss, rel=1e-4)
    best = max(records(trained_run, "eval"), key=lambda r: r["valid_mean_f1"])["valid_documents_f1"]
    assert results[True].scores.f1 == results[False].scores.f1 == best  # the adapter kept is the best one


@needs_conll
def test_a_run_that_leaves_the_batch_budget_to_the_device_batches_by_the_device(trained_run, conll_slice):
    """2,048 padded tokens per pass on a CPU, 16,384 on a GPU; a budget the run set holds on every device. Planning
    touches no tensor, so a predictor bound for a GPU plans here."""
    assert json.loads((trained_run / TAGGING_FILE).read_text())["settings"]["max_tokens"] is None
    run = load_run(trained_run)
    examples = run.windows(read_conll(conll_slice / "valid.txt", labels=run.labels))

    def padded_sizes(predictor) -> list[int]:
        return [len(batch) * max(len(examples[i].input_ids) for i in batch) for batch in predictor.plan(examples)]

    on_gpu = dataclasses.replace(run, device=torch.device("cuda"))
    assert sum(len(e.input_ids) for e in examples) > 2048
    assert max(padded_sizes(run)) <= 2048 and len(padded_sizes(run)) > 1
    assert len(padded_sizes(on_gpu)) == 1 and padded_sizes(on_gpu)[0] <= 16384  # the whole split in one pass
    assert run.max_tokens == 2048 and on_gpu.max_tokens == 16384
    set_by_run = dataclasses.replace(on_gpu, settings=dataclasses.replace(run.settings, max_tokens=512))
    assert max(padded_sizes(set_by_run)) <= 512 and set_by_run.max_tokens == 512


@needs_conll
def test_a_run_directory_that_is_not_one_is_a_clear_error(trained_run, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/{TAGGING_FILE}: not a run directory"):
        load_run(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    shutil.rmtree(copy / ADAPTER_DIR)
    with pytest.raises(FileNotFoundError, match=f"{copy / ADAPTER_DIR}: missing; the run has not finished"):
        load_run(copy)
    shutil.copytree(trained_run / ADAPTER_DIR, copy / ADAPTER_DIR)
    info = json.loads((copy / TAGGING_FILE).read_text())
    info["settings"]["packing"] = True  # a setting this version does not have
    (copy / TAGGING_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match=f"{copy / TAGGING_FILE}: not a tagging file of this version"):
        load_run(copy)


LABELS = LabelSet.from_types(["PER", "ORG", "LOC", "MISC"])


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """A run directory as training leaves it for each way of fine-tuning (LoRA, full), of the tiny random model:
    untrained, since only its files matter here."""
    runs = {}
    for finetune in ("lora", "full"):
        run_dir = tmp_path_factory.mktemp(finetune)
        config = TrainConfig(model=str(tiny_model), out=str(run_dir), finetune=finetune, device="cpu")
        write_run_info(run_dir, config, LABELS, sources={})
        save_tuned(build_tagger(config, len(LABELS), torch.device("cpu")), run_dir, finetune)
        runs[finetune] = run_dir
    return runs


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-8])  # a full disk or an interrupted copy


def without_tensor(name: str) -> Callable[[Path], None]:
    def drop(path: Path) -> None:
        tensors = load_file(path)
        del tensors[name]
        save_file(tensors, path)
    return drop


# (the run, the file broken, how, the error: the path it starts with and the text after it)
BROKEN = {
    "adapter-cut-short": ("lora", f"{ADAPTER_DIR}/{WEIGHTS_NAME}", cut_short,
                          f"{ADAPTER_DIR}/{WEIGHTS_NAME}: unreadable safetensors file ("),
    "adapter-without-head": ("lora", f"{ADAPTER_DIR}/{WEIGHTS_NAME}", without_tensor("head.bias"),
                             f"{ADAPTER_DIR}/{WEIGHTS_NAME}: missing tensor 'head.bias'"),
    "finetuned-cut-short": ("full", FINETUNED_NAME, cut_short, f"{FINETUNED_NAME}: unreadable safetensors file ("),
    "finetuned-without-a-layer": ("full", FINETUNED_NAME, without_tensor("backbone.layers.1.mlp.up_proj.weight"),
                                  f"{FINETUNED_NAME}: missing tensor 'backbone.layers.1.mlp.up_proj.weight'"),
    "base-cut-short": ("lora", "base/model.safetensors", cut_short,
                       "base/model.safetensors: unreadable safetensors file ("),
    "base-without-a-layer": ("lora", "base/model.safetensors", without_tensor("model.layers.1.mlp.up_proj.weight"),
                             "base: 1 tensor(s) missing from the checkpoint, e.g. model.layers.1.mlp.up_proj.weight"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_run_is_one_error_line_naming_the_file_in_predict_and_evaluate(tiny_runs, tiny_model, tmp_path,
                                                                                 capsys, case):
    finetune, name, damage, message = BROKEN[case]
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_runs[finetune], run_dir)
    shutil.copytree(tiny_model, run_dir / "base")  # the base checkpoint, here to break (--model points to it)
    damage(run_dir / name)
    with pytest.raises(ValueError) as error:
        load_run(run_dir, device="cpu", model=str(run_dir / "base"))
    assert str(error.value).startswith(f"{run_dir}/{message}") and "\n" not in str(error.value)
    data = tmp_path / "valid.txt"
    data.write_text("Peter B-PER\nBlackburn I-PER\n")
    flags = ["--run", str(run_dir), "--model", str(run_dir / "base"), "--device", "cpu"]
    for cli, arguments in ((predict_cli, ["Peter Blackburn"]), (evaluate_cli, ["--data", str(data)])):
        assert cli.main(flags + arguments) == 2, cli.__name__
        assert capsys.readouterr().err == f"error: {error.value}\n", cli.__name__


@pytest.mark.parametrize("device, gpus, message", [
    ("gpu", 0, "--device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("cuda", 0, "--device cuda: there is no such GPU here (torch sees 0 CUDA devices); use --device auto or cpu"),
    ("cuda:1", 1, "--device cuda:1: there is no such GPU here (torch sees 1 CUDA devices); use --device auto or cpu"),
    ("mps", 0, "--device mps: this machine has no Apple GPU (torch.backends.mps); use --device auto or cpu"),
], ids=["gpu", "cuda-without-one", "second-of-one", "mps-without-one"])
def test_a_device_that_is_not_one_is_one_error_line_in_predict_and_evaluate(tiny_runs, tmp_path, monkeypatch, capsys,
                                                                             device, gpus, message):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    data = tmp_path / "valid.txt"
    data.write_text("Peter B-PER\nBlackburn I-PER\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        load_run(tiny_runs["lora"], device=device)
    for cli, arguments in ((predict_cli, ["Peter Blackburn"]), (evaluate_cli, ["--data", str(data)])):
        assert cli.main(["--run", str(tiny_runs["lora"]), "--device", device] + arguments) == 2, cli.__name__
        assert capsys.readouterr().err == f"error: {message}\n", cli.__name__

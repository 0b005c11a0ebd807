"""The fine-tuning loop end to end (train/loop.py): it learns on real CoNLL-2003 sentences, logs what the curves
need, resumes exactly, and refuses to mix runs."""

from __future__ import annotations

import fcntl
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from data.align import Example, build_examples
from data.conll import Sentence, document_spans, read_conll
from data.labels import LabelSet
from data.views import taken_out
from model import load_tokenizer
from tag.run import load_run
from tests.conll_data import needs_conll, records
from train.config import TrainConfig
from train.distributed import SINGLE_PROCESS
from train.loop import Run, epoch_plan, read_training, set_up, train
from train.run_dir import ADAPTER_DIR, CHECKPOINT_FILE


@needs_conll
def test_short_real_run_lowers_the_loss_and_beats_all_o(trained_run, conll_slice):
    train_records = records(trained_run, "train")
    assert train_records[0]["step"] == 1, "the first record is the loss before any update"
    untrained = train_records[0]["loss"]
    assert sum(r["loss"] for r in train_records[-2:]) / 2 < 0.5 * untrained
    evals = records(trained_run, "eval")
    assert evals[-1]["valid_documents_loss"] < 0.5 * untrained
    # All-O predicts no entity: F1 0. The tagger must find real entities in sentences it never saw (60 steps on
    # 240 sentences land between 28 and 33, depending on the last bits of rounding).
    assert max(e["valid_documents_f1"] for e in evals) > 20.0
    # Each evaluation also scores the training sentences (all 240 here), which the tagger has seen: better.
    assert all(e["train_loss"] < e["valid_documents_loss"] and e["train_f1"] > e["valid_documents_f1"] for e in evals)
    for name in ("run.json", "tagging.json", f"{ADAPTER_DIR}/adapter.safetensors", f"{ADAPTER_DIR}/adapter_config.json",
                 CHECKPOINT_FILE, "curves.png"):
        assert (trained_run / name).exists(), name


@needs_conll
def test_subset_evaluations_between_full_ones_keep_no_adapter(trained_run):
    """Every 20 steps the fixed subsets are scored for the curves; the full evaluations alone pick the best."""
    subset, full = records(trained_run, "subset_eval"), records(trained_run, "eval")
    assert [r["step"] for r in subset] == [20, 40] and [r["step"] for r in full] == [30, 60]
    assert all(r["valid_sentences"] == 40 for r in subset) and all(r["valid_sentences"] == 120 for r in full)
    assert all("train_f1" in r for r in subset)
    best = torch.load(trained_run / CHECKPOINT_FILE, weights_only=False)["progress"]["best"]
    assert best["type"] == "eval" and best["valid_mean_f1"] == max(r["valid_mean_f1"] for r in full)


@needs_conll
def test_run_json_names_the_code_the_run_was_made_with(trained_run):
    code = json.loads((trained_run / "run.json").read_text())["code"]
    git = ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"]
    head = subprocess.run(git, capture_output=True, text=True)
    if head.returncode != 0:  # tests run outside a git checkout
        assert code is None
    else:
        assert code.removesuffix("-dirty") == head.stdout.strip()


@needs_conll
def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_model, conll_slice, tmp_path):
    settings = dict(model=str(tiny_model), data=str(conll_slice), window="sentence", limit=96, batch_size=8, batch_tokens=None,
                    epochs=2, lr=1e-3, eval_every=9, checkpoint_every=4, head_dropout=0.1, lora_dropout=0.1)
    whole = TrainConfig(out=str(tmp_path / "whole"), **settings)
    train(whole)

    parted = TrainConfig(out=str(tmp_path / "parted"), **settings)

    def kill_at_step_14(step: int) -> None:
        if step == 14:
            raise KeyboardInterrupt  # after the checkpoint of step 12, before the one of step 16

    with pytest.raises(KeyboardInterrupt):
        train(parted, on_step=kill_at_step_14)
    assert torch.load(tmp_path / "parted" / CHECKPOINT_FILE, weights_only=False)["progress"]["step"] == 12
    train(parted)

    final = [torch.load(tmp_path / run / CHECKPOINT_FILE, weights_only=False) for run in ("whole", "parted")]
    assert final[0]["progress"]["step"] == final[1]["progress"]["step"] == 24
    for name, tensor in final[0]["trainable"].items():
        assert torch.equal(tensor, final[1]["trainable"][name]), name
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "seconds")} for r in rs]
    for kind in ("train", "eval"):
        assert strip(records(tmp_path / "whole", kind)) == strip(records(tmp_path / "parted", kind))


@needs_conll
def test_document_windows_train_and_evaluate_alike(tiny_model, conll_slice, tmp_path):
    """With --window document the run trains and evaluates on windows over whole documents, and
    a reloaded run rebuilds the same windows from run.json: it reproduces the run's validation loss."""
    config = TrainConfig(model=str(tiny_model), data=str(conll_slice), out=str(tmp_path / "run"), limit=64,
                         window="document", max_len=64, stride=48, batch_size=2, batch_tokens=None, max_steps=6, lr=1e-2,
                         train_eval_sentences=0)
    best = train(config)
    assert "train_f1" not in best  # train_eval_sentences=0 switches the training-subset score off
    sentences = read_conll(conll_slice / "valid.txt")
    run = load_run(tmp_path / "run", merge=False)  # the adapters apart, as in training: the same rounding
    examples = build_examples(sentences, load_tokenizer(tiny_model), 64, stride=48, document=True, labels=run.labels)
    assert len(examples) < len(sentences) / 2  # windows span several sentences
    # The loss depends on the windows (a word's context), so an equal loss means equal windows.
    assert run.settings.document and not run.bf16
    result = run.tag(sentences)
    assert result.loss == pytest.approx(best["valid_documents_loss"], rel=1e-6)
    assert result.scores.f1 == best["valid_documents_f1"]


@needs_conll
def test_token_budget_batches_mix_sentence_and_document_windows(tiny_model, conll_slice):
    """--batch-tokens fills each step up to a padded-token budget, over document windows and the windows of sentences
    alone that --window both adds; every window is in one batch of the epoch."""
    sentences = read_conll(conll_slice / "train.txt")
    labels = LabelSet.from_sentences((s.tags for s in sentences), "train.txt")
    tokenizer = load_tokenizer(tiny_model)
    config = TrainConfig(window="both", batch_tokens=512)
    windows = dict(stride=config.stride, document=True, labels=labels)
    whole = build_examples(sentences, tokenizer, config.max_len, **windows)
    examples = whole + build_examples(taken_out(sentences), tokenizer, config.max_len, **windows)
    assert len(examples) > len(whole)  # the sentences alone give one window per sentence
    plan = epoch_plan(examples, config.batch_size, config.batch_tokens, config.seed, 0, SINGLE_PROCESS)
    assert sorted(i for batch in plan for i in batch) == list(range(len(examples)))
    assert all(len(batch) * max(len(examples[i].input_ids) for i in batch) <= 512 for batch in plan)
    assert max(len(batch) for batch in plan) > 2  # short windows share a step


def windows_of_sentences_alone(run: Run, train_file: Path) -> list[tuple[Example, Sentence]]:
    """The windows `--window both` adds after the document windows, each with its sentence, the document windows
    checked to come first and unchanged; a document of one sentence is already alone (tests/data)."""
    sentences = read_conll(train_file)[: run.config.limit]
    predictor, config = run.predictor, run.config
    documents = build_examples(sentences, predictor.tokenizer, config.max_len, add_bos=config.add_bos,
                               stride=config.stride, document=True, labels=predictor.labels)
    assert [e.input_ids for e in run.fitting.examples[: len(documents)]] == [e.input_ids for e in documents]
    longer = [sentences[s] for a, b in document_spans(sentences) if b - a > 1 for s in range(a, b)]
    taken = run.fitting.examples[len(documents):]
    assert longer and len(taken) == len(longer)
    return list(zip(taken, longer))


def assert_window_holds(run: Run, example: Example, words: list[str], tags: list[str]) -> None:
    """BOS and the words' own tokens, every word labelled with its tag."""
    tokenizer, labels = run.predictor.tokenizer, run.predictor.labels
    tokens = [t for word in words for t in tokenizer.encode(" " + word, bos=False)]
    assert example.input_ids == [tokenizer.bos_id, *tokens]
    assert [labels.labels[example.labels[p]] for p in example.positions] == tags


@needs_conll
def test_the_default_window_trains_each_sentence_in_its_document_and_alone(tiny_model, conll_slice, tmp_path):
    """--window both (the default): the document windows, then one window per sentence of a longer document, BOS
    and the sentence's own tokens, every word labelled (none cut: --bare-fraction 0); steps filled to 512 padded
    tokens."""
    config = TrainConfig(model=str(tiny_model), data=str(conll_slice), out=str(tmp_path), limit=64, bare_fraction=0)
    assert config.window == "both" and config.batch_tokens == 512
    run = set_up(config, SINGLE_PROCESS, torch.device("cpu"))
    for example, sentence in windows_of_sentences_alone(run, conll_slice / "train.txt"):
        assert_window_holds(run, example, sentence.words, sentence.tags)
    plan = run.epoch_plan(0)
    assert all(len(b) * max(len(run.fitting.examples[i].input_ids) for i in b) <= 512 for b in plan)


@needs_conll
def test_bare_fraction_trains_a_share_of_the_sentences_alone_without_final_punctuation(tiny_model, conll_slice,
                                                                                        tmp_path):
    """The default (--bare-fraction 0.5 with --window both): the windows of sentences alone are the sentences' words,
    a share of them cut before their trailing punctuation (never inside an entity); the document windows are
    untouched."""
    config = TrainConfig(model=str(tiny_model), data=str(conll_slice), out=str(tmp_path), limit=64)
    assert config.bare_share == 0.5
    run = set_up(config, SINGLE_PROCESS, torch.device("cpu"))
    pairs = windows_of_sentences_alone(run, conll_slice / "train.txt")
    cut = 0
    for example, sentence in pairs:
        kept = len(example.positions)
        assert 1 <= kept <= len(sentence.words)
        assert all(not any(c.isalnum() for c in w) for w in sentence.words[kept:])
        assert all(t == "O" for t in sentence.tags[kept:])
        assert_window_holds(run, example, sentence.words[:kept], sentence.tags[:kept])
        cut += kept < len(sentence.words)
    ending = sum(not any(c.isalnum() for c in s.words[-1]) and s.tags[-1] == "O" for _, s in pairs)
    assert 0 < cut <= round(0.5 * len(pairs)) and cut < ending  # about half of those that end in punctuation


@needs_conll
def test_a_fraction_of_an_epoch_sizes_the_schedule_and_ends_the_run(tiny_model, conll_slice, tmp_path):
    """--epochs 0.5 trains the first half of the shuffled epoch (rounded up to a step) on a schedule of that length,
    and evaluates once, at its end."""
    settings = dict(model=str(tiny_model), data=str(conll_slice), limit=40, subset_eval_every=None)
    half = TrainConfig(out=str(tmp_path / "half"), epochs=0.5, **settings)
    run = set_up(half, SINGLE_PROCESS, torch.device("cpu"))
    epoch = len(run.epoch_plan(0))
    assert epoch > 4 and run.fitting.scheduler.total_steps == math.ceil(epoch / 2)
    train(half)
    steps = [r["step"] for r in records(tmp_path / "half", "train")]
    evaluations = [r["step"] for r in records(tmp_path / "half", "eval")]
    assert max(steps) <= math.ceil(epoch / 2) and evaluations == [math.ceil(epoch / 2)]


@needs_conll
def test_a_run_directory_refuses_other_settings(tiny_model, conll_slice, tmp_path, monkeypatch):
    settings = dict(model=str(tiny_model), data=str(conll_slice), limit=16, batch_size=8, max_steps=1)
    train(TrainConfig(out=str(tmp_path), **settings))
    with pytest.raises(ValueError, match="lr"):
        train(TrainConfig(out=str(tmp_path), lr=1e-2, **settings))
    monkeypatch.chdir(tmp_path.parent)  # the same directory by a relative path is the same run
    assert train(TrainConfig(out=tmp_path.name, **settings))["step"] == 1




def quick_run(tiny_model: Path, data: Path, out: Path) -> TrainConfig:
    return TrainConfig(model=str(tiny_model), data=str(data), out=str(out), limit=16, batch_size=8, max_steps=1)


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@needs_conll
def test_a_run_without_its_checkpoint_is_never_started_over(tiny_model, conll_slice, tmp_path):
    """With checkpoint.pt gone, the same command must not delete metrics.jsonl and replace the best adapter: the run
    directory holds results, and is refused."""
    config = quick_run(tiny_model, conll_slice, tmp_path / "run")
    train(config)
    (tmp_path / "run" / CHECKPOINT_FILE).unlink()
    before = contents(tmp_path / "run")
    with pytest.raises(ValueError, match=f"{tmp_path / 'run'} holds .*{ADAPTER_DIR}.*metrics.jsonl.* no "
                                         f"{CHECKPOINT_FILE}.*another --out"):
        train(config)
    assert contents(tmp_path / "run") == before


@needs_conll
def test_resuming_on_other_data_or_other_weights_of_the_same_shape_is_refused(tiny_model, conll_slice, tmp_path):
    data, model = tmp_path / "data", tmp_path / "model"
    shutil.copytree(conll_slice, data)
    shutil.copytree(tiny_model, model)
    config = quick_run(model, data, tmp_path / "run")
    train(config)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["sources"]["data"] == str(data.resolve())
    (data / "train.txt").write_text((data / "train.txt").read_text().replace("EU", "UN", 1))
    with pytest.raises(ValueError, match="train.txt.*another --out"):
        train(config)
    shutil.copy(conll_slice / "train.txt", data / "train.txt")
    assert train(config)["step"] == 1  # the data it started from: it resumes (and is finished)

    tensors = load_file(model / "model.safetensors")
    save_file({name: torch.randn_like(t) for name, t in tensors.items()}, model / "model.safetensors")
    with pytest.raises(ValueError, match=f"base weights in {model}"):
        train(config)


@needs_conll
def test_a_second_training_into_the_same_out_stops_at_once(tiny_model, conll_slice, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as the first training holds it
        with pytest.raises(ValueError, match=f"{out}: another training"):
            train(quick_run(tiny_model, conll_slice, out))
    assert [p.name for p in out.iterdir()] == [".lock"]
    assert train(quick_run(tiny_model, conll_slice, out))["step"] == 1  # the lock is free again


@pytest.mark.parametrize("window, noted", [("both", True), ("document", True), ("sentence", False)])
def test_a_training_file_without_documents_is_said_aloud(tmp_path, capsys, window, noted):
    """A copy of CoNLL-2003 without -DOCSTART- lines (the hub's rows) trains another recipe than the README's:
    every sentence is its own document. The run says so in one line at its start."""
    (tmp_path / "train.txt").write_text("EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n")
    config = TrainConfig(data=str(tmp_path), out=str(tmp_path / "run"), window=window)
    read_training(config, tmp_path / "train.txt", None)
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'train.txt'}: no -DOCSTART- line" in err) == noted
    assert err.count("\n") == int(noted)
    (tmp_path / "docs.txt").write_text("-DOCSTART- O\n\nEU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n")
    read_training(config, tmp_path / "docs.txt", None)
    assert capsys.readouterr().err == ""

"""The fine-tuning loop end to end: it learns on real CoNLL-2003 sentences, resumes exactly, accumulates gradients
exactly, and leaves a run directory that `train.evaluate` and `train.predict` accept."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from data.align import build_examples
from data.batching import collate
from data.conll import read_conll
from data.labels import LABELS, first_iob2_violation
from model import load_tokenizer
from tests.conll_data import CONLL, needs_conll, slice_conll
from tag import evaluate as evaluate_cli
from tag import predict as predict_cli
from tag.run import load_run
from train.config import TrainConfig, parse_args
from train.build import build_tagger
from train.evaluation import tag_and_score
from train.loop import train
from train.run_dir import CHECKPOINT_FILE, METRICS_FILE
from train.step import forward_backward


@pytest.fixture(scope="module")
def conll_slice(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("conll")
    slice_conll(CONLL / "train.txt", folder / "train.txt", 240)
    slice_conll(CONLL / "valid.txt", folder / "valid.txt", 120)
    return folder


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / METRICS_FILE).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, conll_slice, smollm2_dir) -> Path:
    """SmolLM2-135M fine-tuned for 60 steps on 240 real training sentences."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(model=str(smollm2_dir), data=str(conll_slice), out=str(out), window="sentence",
                         epochs=2, batch_size=8, lr=1e-3, eval_every=30, checkpoint_every=30)
    train(config)
    return out


@needs_conll
def test_short_real_run_lowers_the_loss_and_beats_all_o(trained_run, conll_slice):
    train_records = records(trained_run, "train")
    assert train_records[0]["step"] == 1, "the first record is the loss before any update"
    untrained = train_records[0]["loss"]
    assert sum(r["loss"] for r in train_records[-2:]) / 2 < 0.5 * untrained
    evals = records(trained_run, "eval")
    assert evals[-1]["valid_loss"] < 0.5 * untrained
    # All-O predicts no entity: F1 0. The tagger must find real entities in sentences it never saw (60 steps on
    # 240 sentences land between 28 and 33, depending on the last bits of rounding).
    assert max(e["valid_f1"] for e in evals) > 20.0
    # Each evaluation also scores the training sentences (all 240 here), which the tagger has seen: better.
    assert all(e["train_loss"] < e["valid_loss"] and e["train_f1"] > e["valid_f1"] for e in evals)
    for name in ("run.json", "adapter.safetensors", "adapter_config.json", CHECKPOINT_FILE, "curves.png"):
        assert (trained_run / name).exists(), name


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
        assert all(first_iob2_violation([line.split()[2] for line in b.splitlines()]) is None for b in blocks)


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


@needs_conll
def test_interrupted_and_resumed_run_equals_uninterrupted(tiny_model, conll_slice, tmp_path):
    settings = dict(model=str(tiny_model), data=str(conll_slice), window="sentence", limit=96, batch_size=8,
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
                         window="document", max_len=64, stride=48, batch_size=2, max_steps=6, lr=1e-2,
                         train_eval_sentences=0)
    best = train(config)
    assert "train_f1" not in best  # train_eval_sentences=0 switches the training-subset score off
    sentences = read_conll(conll_slice / "valid.txt")
    examples = build_examples(sentences, load_tokenizer(tiny_model), 64, **config.window_settings())
    assert len(examples) < len(sentences) / 2  # windows span several sentences
    # The loss depends on the windows (a word's context), so an equal loss means equal windows.
    run = load_run(tmp_path / "run")
    assert run.config.window == "document"
    result = tag_and_score(run.tagger, run.tokenizer, run.config, sentences, run.device, bf16=False)
    assert result.loss == pytest.approx(best["valid_loss"], rel=1e-6)
    assert result.scores.f1 == best["valid_f1"]


@needs_conll
def test_a_run_directory_refuses_other_settings(tiny_model, conll_slice, tmp_path, monkeypatch):
    settings = dict(model=str(tiny_model), data=str(conll_slice), limit=16, batch_size=8, max_steps=1)
    train(TrainConfig(out=str(tmp_path), **settings))
    with pytest.raises(ValueError, match="lr"):
        train(TrainConfig(out=str(tmp_path), lr=1e-2, **settings))
    monkeypatch.chdir(tmp_path.parent)  # the same directory by a relative path is the same run
    assert train(TrainConfig(out=tmp_path.name, **settings))["step"] == 1


@needs_conll
def test_gradient_accumulation_and_padding_equal_per_sentence_computation(tiny_model, conll_slice):
    """One padded batch, the same batch as 4 micro-batches, and each sentence alone give the same gradient."""
    config = TrainConfig(model=str(tiny_model), head_dropout=0.0)
    tagger = build_tagger(config, len(LABELS), torch.device("cpu"))
    with torch.no_grad():
        for name, p in tagger.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    tokenizer = load_tokenizer(tiny_model)
    examples = build_examples(read_conll(conll_slice / "train.txt")[:8], tokenizer, 256)
    rows = list(range(8))

    def gradient(parts: list[list[int]]) -> tuple[float, list[torch.Tensor]]:
        tagger.zero_grad()
        loss, _ = forward_backward(tagger, [collate(examples, p, tokenizer.pad_id) for p in parts], torch.device("cpu"),
                             bf16=False)
        return loss, [p.grad.clone() for p in tagger.parameters() if p.requires_grad]

    one_loss, one = gradient([rows])
    for parts in ([rows[:2], rows[2:4], rows[4:6], rows[6:]], [[r] for r in rows]):
        loss, grads = gradient(parts)
        assert loss == pytest.approx(one_loss, rel=1e-5)
        for a, b in zip(one, grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_cli_flags_and_presets():
    config = parse_args(["--causal", "--bidirectional-top-layers", "4", "--lora-targets", "q_proj", "v_proj",
                         "--lr", "1e-3", "--max-steps", "5", "--no-bos"])
    assert config.causal and config.bidirectional_top_layers == 4 and config.lora_targets == ("q_proj", "v_proj")
    assert config.lr == 1e-3 and config.max_steps == 5 and not config.add_bos
    assert not parse_args([]).causal, "the default tagger is bidirectional"
    windows = parse_args(["--window", "document", "--stride", "100", "--compile"])
    assert windows.window_settings()["document"] and windows.stride == 100 and windows.compile
    with pytest.raises(ValueError, match="window must be"):
        parse_args(["--window", "paragraph"])
    with pytest.raises(ValueError, match="document windows already hold"):
        parse_args(["--window", "document", "--context", "32"])
    preset = parse_args(["--preset", "llama-3.2-1b", "--epochs", "1"])
    assert preset.model == "weights/llama-3.2-1b" and preset.epochs == 1
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        parse_args(["--lora-targets", "qkv"])
    assert parse_args([]).decode == "viterbi" and parse_args(["--decode", "argmax"]).decode == "argmax"
    with pytest.raises(ValueError, match="decode must be"):
        parse_args(["--decode", "beam"])


def test_a_saved_run_reads_back_as_it_was_made():
    written = TrainConfig(window="document", decode="viterbi", lr=1e-3).to_json()
    assert TrainConfig.from_saved(written) == TrainConfig.from_json(written)
    # A run written before document windows and decoders existed was trained on sentences and read by argmax.
    older = {k: v for k, v in written.items() if k not in ("window", "stride", "decode")}
    assert TrainConfig.from_saved(older) == TrainConfig(window="sentence", stride=None, decode="argmax", lr=1e-3)

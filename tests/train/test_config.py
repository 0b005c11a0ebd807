"""train/config.py: the command line, recipes and the checks on settings."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import train.__main__ as train_cli
from train.config import TrainConfig, parse_args

ROOT = Path(__file__).resolve().parents[2]


def test_cli_flags_and_recipes():
    config = parse_args(["--causal", "--bidirectional-top-layers", "4", "--lora-targets", "q_proj", "v_proj",
                         "--lr", "1e-3", "--max-steps", "5", "--no-bos"])
    assert config.causal and config.bidirectional_top_layers == 4 and config.lora_targets == ("q_proj", "v_proj")
    assert config.lr == 1e-3 and config.max_steps == 5 and not config.add_bos
    assert not parse_args([]).causal, "the default tagger is bidirectional"
    windows = parse_args(["--window", "document", "--stride", "100", "--compile"])
    assert windows.tagging().document and windows.stride == 100 and windows.compile
    with pytest.raises(ValueError, match="window must be"):
        parse_args(["--window", "paragraph"])
    recipe = parse_args(["--recipe", "llama-3.2-1b", "--epochs", "1"])
    assert recipe.model == "weights/llama-3.2-1b" and recipe.epochs == 1 and recipe.lr == 2e-4
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        parse_args(["--lora-targets", "qkv"])
    assert parse_args([]).decode == "viterbi" and parse_args(["--decode", "argmax"]).decode == "argmax"
    with pytest.raises(ValueError, match="decode must be"):
        parse_args(["--decode", "beam"])


def test_data_settings():
    config = parse_args(["--scheme", "bioes", "--labels", "labels.txt", "--window", "document",
                         "--batch-tokens", "512"])
    settings = (config.scheme, config.labels, config.window, config.batch_tokens)
    assert settings == ("bioes", "labels.txt", "document", 512)
    assert parse_args([]).scheme == "auto" and parse_args([]).labels is None
    wnut = parse_args(["--recipe", "wnut17"])
    assert wnut.window == "sentence" and wnut.batch_size == 16 and wnut.batch_tokens is None
    default = parse_args([])
    assert default.window == "both" and default.batch_tokens == 512  # the default recipe
    assert parse_args(["--batch-size", "4"]).batch_tokens is None  # a batch size alone: steps of 4 windows
    assert parse_args(["--batch-size", "4", "--batch-tokens", "1024"]).batch_tokens == 1024
    assert parse_args(["--epochs", "0.55"]).epochs == 0.55  # a fraction of an epoch (train/loop.py sizes it)
    assert default.bare_share == 0.5 and wnut.bare_share == 0.0  # sentence windows are the posts as they come
    assert parse_args(["--bare-fraction", "0"]).bare_share == 0.0
    for flags, message in [(["--scheme", "bilou"], "scheme must be one of"),
                           (["--epochs", "0"], "epochs must be positive"),
                           (["--bare-fraction", "-0.1"], r"--bare-fraction must be in \[0, 1\]"),
                           (["--window", "document", "--bare-fraction", "0.5"], "use --window both"),
                           (["--batch-tokens", "100"], r"--batch-tokens must be at least one window \(--max-len 256")]:
        with pytest.raises(ValueError, match=message):
            parse_args(flags)


def test_settings_round_trip_through_run_json_and_unknown_ones_are_refused():
    config = parse_args(["--window", "sentence", "--lora-targets", "q_proj", "v_proj", "--subset-eval-every", "50"])
    assert TrainConfig.from_json(config.to_json()) == config and config.subset_eval_every == 50
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_json({**config.to_json(), "packing": True})


# One value out of range for each number a run takes, and the start of the one line that refuses it.
OUT_OF_RANGE = [
    (["--bidirectional-top-layers", "-1"], "--bidirectional-top-layers must be at least 0, got -1"),
    (["--lora-r", "0"], "--lora-r must be at least 1, got 0"),
    (["--lora-alpha", "0"], "--lora-alpha must be positive, got 0.0"),
    (["--lora-dropout", "1"], "--lora-dropout must be in [0, 1), got 1.0"),
    (["--head-dropout", "-0.1"], "--head-dropout must be in [0, 1), got -0.1"),
    (["--lr", "0"], "--lr must be positive, got 0.0"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--weight-decay", "-0.01"], "--weight-decay must be at least 0, got -0.01"),
    (["--warmup-ratio", "1"], "--warmup-ratio must be in [0, 1), got 1.0"),  # no step left after the warmup
    (["--min-lr-ratio", "1.5"], "--min-lr-ratio must be in [0, 1], got 1.5"),
    (["--clip-grad-norm", "0"], "--clip-grad-norm must be positive, got 0.0"),  # 0 would zero every gradient
    (["--epochs", "inf"], "--epochs must be a finite number, got inf"),
    (["--max-steps", "0"], "--max-steps must be at least 1, got 0"),  # 0 meant: as many as the epochs take
    (["--batch-tokens", "255"], "--batch-tokens must be at least one window (--max-len 256), got 255"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--grad-accum", "0"], "--grad-accum must be at least 1, got 0"),  # a division by zero
    (["--limit", "-5"], "--limit must be at least 1, got -5"),  # silently dropped the last five sentences
    (["--limit", "0"], "--limit must be at least 1, got 0"),  # failed in the schedule
    (["--seed", "-1"], "--seed must be at least 0, got -1"),
    (["--max-len", "1"], "--max-len must be at least 2 (a token besides BOS), got 1"),
    (["--stride", "0"], "--stride must be in [1, 255] (the tokens of a window besides BOS), got 0"),
    (["--stride", "256"], "--stride must be in [1, 255] (the tokens of a window besides BOS), got 256"),
    (["--bare-fraction", "2"], "--bare-fraction must be in [0, 1], got 2.0"),
    (["--eval-every", "0"], "--eval-every must be at least 1, got 0"),  # 0 meant: once per epoch
    (["--subset-eval-every", "-1"], "--subset-eval-every must be at least 0 (0: never), got -1"),
    (["--subset-eval-sentences", "0"], "--subset-eval-sentences must be at least 1, got 0"),
    (["--eval-max-tokens", "255"], "--eval-max-tokens must be at least one window (--max-len 256), got 255"),
    (["--train-eval-sentences", "-1"], "--train-eval-sentences must be at least 0, got -1"),
    (["--patience", "0"], "--patience must be at least 1, got 0"),  # stopped at the first evaluation
    (["--checkpoint-every", "0"], "--checkpoint-every must be at least 1, got 0"),  # a division by zero
]


@pytest.mark.parametrize("flags, message", OUT_OF_RANGE, ids=[" ".join(flags) for flags, _ in OUT_OF_RANGE])
def test_a_number_out_of_range_is_refused_at_the_start_naming_its_flag(flags, message):
    with pytest.raises(ValueError) as error:
        parse_args(flags)
    assert str(error.value) == message


def test_every_number_a_run_takes_has_its_range_checked():
    numbers = {f.name for f in dataclasses.fields(TrainConfig)
               if f.type in ("int", "float", "int | None", "float | None")}
    checked = {flags[-2].removeprefix("--").replace("-", "_") for flags, _ in OUT_OF_RANGE}
    assert numbers and numbers - checked == set()
    for flags in (["--warmup-ratio", "0"], ["--min-lr-ratio", "1"], ["--subset-eval-every", "0"],
                  ["--train-eval-sentences", "0"], ["--stride", "255"], ["--eval-max-tokens", "256"],
                  ["--no-bos", "--max-len", "1", "--stride", "1", "--batch-tokens", "1", "--eval-max-tokens", "1"],
                  ["--limit", "1"], ["--seed", "0"], ["--weight-decay", "0"]):
        parse_args(flags)  # the edges of each range are in it


@pytest.mark.parametrize("flags, message", [
    (["--device", "gpu"], "--device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    (["--bidirectional-top-layers", "2"], "--bidirectional-top-layers lifts the causal mask of the top layers; "
                                          "it needs --causal"),
    (["--batch-size", "3", "--grad-accum", "2"], "--batch-size 3 is not a multiple of --grad-accum 2"),
    (["--finetune", "half"], "--finetune must be one of lora, full, got 'half'"),
    (["--precision", "fp16"], "--precision must be one of auto, float32, bf16, got 'fp16'"),
], ids=["device", "top-layers-without-causal", "accumulation", "finetune", "precision"])
def test_a_setting_that_is_not_one_is_refused_naming_its_flag(flags, message):
    with pytest.raises(ValueError) as error:
        parse_args(flags)
    assert str(error.value) == message
    assert parse_args(["--device", "cuda:1"]).device == "cuda:1"  # a run trained on a GPU reads back on a CPU
    assert parse_args(["--causal", "--bidirectional-top-layers", "2"]).bidirectional_top_layers == 2


def python_m_train(*flags: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train", *flags], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_python_m_train_refuses_bad_settings_and_data_in_one_line_exit_2(tmp_path):
    refused = python_m_train("--grad-accum", "0", "--out", str(tmp_path / "run"))
    assert (refused.returncode, refused.stderr) == (2, "error: --grad-accum must be at least 1, got 0\n")
    assert not (tmp_path / "run").exists()  # refused before anything was made
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_bytes("Peter B-PER\n\nJosé B-PER\n".encode("latin-1"))
    (data / "valid.txt").write_text("Peter B-PER\n")
    latin = python_m_train("--data", str(data), "--out", str(tmp_path / "run"))
    assert latin.returncode == 2 and latin.stderr.startswith(f"error: {data / 'train.txt'}:3: not valid UTF-8 ")
    assert latin.stderr.count("\n") == 1
    missing = python_m_train("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"))
    assert (missing.returncode, missing.stderr) == (2, f"error: --data: {tmp_path / 'nowhere'} is not a directory\n")


def test_a_bug_in_training_stays_a_traceback(monkeypatch, capsys):
    """Errors before the first step are about the settings, data and files a run reads: one line. After it, and of
    any other kind, they are bugs, and their traceback is what a report needs."""
    def fails_before_the_first_step(config, on_step):
        raise ValueError("a bad setting")

    def fails_after_a_step(config, on_step):
        on_step(1)
        raise ValueError("a bug")

    def fails_with_a_type_error(config, on_step):
        raise TypeError("a bug")

    monkeypatch.setattr(train_cli, "train", fails_before_the_first_step)
    assert train_cli.main([]) == 2 and capsys.readouterr().err == "error: a bad setting\n"
    for bug, kind in ((fails_after_a_step, ValueError), (fails_with_a_type_error, TypeError)):
        monkeypatch.setattr(train_cli, "train", bug)
        with pytest.raises(kind, match="a bug"):
            train_cli.main([])

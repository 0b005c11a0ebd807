"""train/config.py: the command line, recipes and the checks on settings."""

from __future__ import annotations

import pytest

from train.config import TrainConfig, parse_args


def test_cli_flags_and_recipes():
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
    recipe = parse_args(["--recipe", "llama-3.2-1b", "--epochs", "1"])
    assert recipe.model == "weights/llama-3.2-1b" and recipe.epochs == 1 and recipe.lr == 2e-4
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        parse_args(["--lora-targets", "qkv"])
    assert parse_args([]).decode == "viterbi" and parse_args(["--decode", "argmax"]).decode == "argmax"
    with pytest.raises(ValueError, match="decode must be"):
        parse_args(["--decode", "beam"])


def test_data_settings():
    config = parse_args(["--scheme", "bioes", "--labels", "labels.txt", "--window", "document",
                         "--alone-fraction", "0.5", "--batch-tokens", "512"])
    settings = (config.scheme, config.labels, config.alone_fraction, config.batch_tokens)
    assert settings == ("bioes", "labels.txt", 0.5, 512)
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
                           (["--bare-fraction", "-0.1"], r"bare_fraction must be in \[0, 1\]"),
                           (["--window", "document", "--bare-fraction", "0.5"], "use --window both"),
                           (["--alone-fraction", "1.5"], r"alone_fraction must be in \[0, 1\]"),
                           (["--window", "sentence", "--alone-fraction", "0.5"], "use --window document"),
                           (["--batch-tokens", "100"], "cannot hold one window of max_len=256")]:
        with pytest.raises(ValueError, match=message):
            parse_args(flags)


def test_settings_round_trip_through_run_json_and_unknown_ones_are_refused():
    config = parse_args(["--window", "sentence", "--lora-targets", "q_proj", "v_proj", "--subset-eval-every", "50"])
    assert TrainConfig.from_json(config.to_json()) == config and config.subset_eval_every == 50
    with pytest.raises(ValueError, match="unknown training settings"):
        TrainConfig.from_json({**config.to_json(), "packing": True})

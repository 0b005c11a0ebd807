"""The GPU benchmark script: runs end to end on a CPU with the tiny shape, states its FLOPs correctly, and refuses
cuda clearly where there is none."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lora.layer import LoRALinear
from model.config import PRESETS
from bench import gpu as gpu_bench

TINY_RUN = ["--config", "tiny", "--device", "cpu", "--batch-size", "8", "--steps", "3", "--warmup", "1"]


def run_bench(tmp_path, *extra: str) -> dict:
    path = tmp_path / "bench.json"
    assert gpu_bench.main([*TINY_RUN, *extra, "--json", str(path)]) == 0
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> dict:
    return run_bench(tmp_path_factory.mktemp("bench"), "--peak-tflops", "2")


def test_runs_end_to_end_and_reports_speed(plain_run):
    result = plain_run
    assert result["config"] == "tiny"
    assert result["device_type"] == "cpu"
    assert result["device"] == gpu_bench.device_name(torch.device("cpu")) and result["device"]
    assert result["torch"] == torch.__version__
    assert result["precision"] == "float32"
    assert result["steps"] == 3 and result["warmup_steps"] == 1
    assert result["train_tokens_per_s"] > 0 and result["tag_tokens_per_s"] > 0
    assert 0 < result["train_mfu"] < 1.5 and 0 < result["tag_mfu"] < 1.5
    assert result["peak_memory_bytes"] > 0 and result["peak_memory_kind"] == "peak RSS"
    assert np.isfinite(result["first_loss"]) and np.isfinite(result["last_loss"])
    # MFU is what the docstring states: 2 x forward FLOPs per real token, over the measured ceiling / stated peak.
    train_flops = 2 * result["forward_flops_per_token"] * result["train_tokens_per_s"]
    assert result["train_mfu"] == pytest.approx(train_flops / result["matmul_ceiling_flops"], rel=1e-9)
    assert result["train_mfu_peak"] == pytest.approx(train_flops / 2e12, rel=1e-9)
    tag_flops = result["forward_flops_per_token"] * result["tag_tokens_per_s"]
    assert result["tag_mfu"] == pytest.approx(tag_flops / result["matmul_ceiling_flops"], rel=1e-9)
    assert result["real_tokens"] <= result["padded_tokens"]


def test_prints_markdown_table(tmp_path, capsys):
    run_bench(tmp_path)
    table = capsys.readouterr().out
    assert table.startswith("| metric | value |\n|---|---|\n")
    for name in ("device", "torch", "config", "train tokens/s", "tag tokens/s", "peak memory"):
        assert f"| {name} |" in table


def test_activation_checkpointing_runs_and_trains_the_same(plain_run, tmp_path):
    result = run_bench(tmp_path, "--activation-checkpointing")
    assert result["activation_checkpointing"] is True
    assert result["train_tokens_per_s"] > 0 and 0 < result["train_mfu"] < 1.5
    # Same seed, same weights and batches: recomputing activations must not change the losses.
    assert result["first_loss"] == pytest.approx(plain_run["first_loss"], rel=1e-5)
    assert result["last_loss"] == pytest.approx(plain_run["last_loss"], rel=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA exists here, so asking for it is no error")
def test_cuda_without_cuda_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_bench.main(["--config", "tiny", "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err


def test_flops_of_the_1b_shape_by_hand():
    # Llama-3.2-1B: hidden 2048, 32 query heads x 64 = 2048, 8 kv heads x 64 = 512, intermediate 8192, 16 layers.
    hidden, d, kv, intermediate, layers = 2048, 32 * 64, 8 * 64, 8192, 16
    per_layer_weights = (hidden * d  # q_proj
                         + hidden * kv + hidden * kv  # k_proj, v_proj
                         + d * hidden  # o_proj
                         + 3 * hidden * intermediate)  # gate, up, down
    assert per_layer_weights == 60_817_408
    attended = 20  # every token attends the 20 tokens of its sentence
    per_layer = 2 * per_layer_weights + 2 * attended * d + 2 * attended * d  # matmuls, q k^T, attention x v
    forward = layers * per_layer
    assert forward == 1_948_778_496
    config = PRESETS["llama-3.2-1b"]
    assert gpu_bench.forward_flops_per_token(config, attended) == forward
    assert gpu_bench.train_flops_per_token(config, attended) == 2 * forward


def test_lengths_follow_conll():
    lengths = np.array(gpu_bench.conll_like_lengths(50_000, np.random.default_rng(0)))
    assert lengths.min() >= 2 and lengths.max() <= 170
    assert 20.0 < lengths.mean() < 21.3  # CoNLL-2003 train: 20.6 Llama 3 tokens with BOS
    assert np.median(lengths) == 17
    assert 27.5 < (lengths**2).sum() / lengths.sum() < 29.5  # mean attended length, CoNLL: 28.3


def test_random_tagger_is_frozen_bf16_with_float32_lora_and_head():
    tagger = gpu_bench.build_random_tagger(gpu_bench.TINY, torch.device("cpu"), torch.bfloat16)
    assert not tagger.backbone.config.causal
    assert all(not block.self_attn.causal for block in tagger.backbone.layers)
    lora = [m for m in tagger.modules() if isinstance(m, LoRALinear)]
    assert len(lora) == 7 * gpu_bench.TINY.num_layers
    assert all(m.r == 16 and m.scaling == 2.0 and m.dropout_p == 0.0 for m in lora)
    assert tagger.head.out_features == 9
    for name, p in tagger.named_parameters():
        expected = torch.float32 if p.requires_grad else torch.bfloat16
        assert p.dtype == expected, name
        assert p.requires_grad == ("lora_" in name or name.startswith("head.")), name
    assert tagger.backbone.rotary.inv_freq.dtype == torch.float32

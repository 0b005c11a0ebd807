"""The GPU benchmark script: runs end to end on a CPU with the tiny shape, states its FLOPs correctly, and refuses
cuda clearly where there is none."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from bench import gpu as gpu_bench
from lora.layer import LoRALinear
from model.llama import Llama
from tests.bench.flop_count import counted_flops

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
    # MFU: the stated model FLOPs per token x tokens/s, over the measured ceiling and over the stated peak.
    train_flops = result["train_flops_per_token"] * result["train_tokens_per_s"]
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


def test_cuda_without_cuda_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU, this one too
    with pytest.raises(SystemExit) as exit_info:
        gpu_bench.main(["--config", "tiny", "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err


def test_flops_per_token_are_what_torch_counts_on_the_timed_sentences(plain_run):
    # The same timed sentences (same seed) through the tiny shape, unpadded, counted by FlopCounterMode: a forward,
    # and a forward + backward through the activations of a frozen base (its embedding trainable: an index-add).
    args = argparse.Namespace(seed=0, batch_size=8, warmup=1, steps=3)
    timed = gpu_bench.synthetic_batches(args, gpu_bench.TINY, torch.device("cpu"))[1:4]
    sentences = [row[mask.bool()] for b in timed for row, mask in zip(b.input_ids, b.attention_mask)]
    tokens = sum(len(s) for s in sentences)
    assert tokens == plain_run["real_tokens"]
    torch.manual_seed(0)
    model = Llama(gpu_bench.TINY.replace(causal=False)).requires_grad_(False)
    forward = sum(counted_flops(model.eval(), sentences).values())
    assert plain_run["forward_flops_per_token"] == pytest.approx(forward / tokens, rel=1e-12)
    model.embed_tokens.weight.requires_grad_(True)
    train = sum(counted_flops(model.train(), sentences, backward=True).values())
    assert plain_run["train_flops_per_token"] == pytest.approx(train / tokens, rel=1e-12)


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

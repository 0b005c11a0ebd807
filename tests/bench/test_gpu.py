"""The GPU benchmark: each cell (shape x token budget x system) measured on a CPU with the tiny shape, its FLOPs
stated correctly, both systems on the very same batches, one table from the whole command, clear errors."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from torch._inductor import config as inductor_config

from bench import gpu as gpu_bench
from lora.layer import LoRALinear
from model.llama import Llama
from tests.bench.flop_count import counted_flops

CPU = torch.device("cpu")
BUDGET, STEPS, WARMUP = 256, 2, 1


def cell_args(**changes) -> argparse.Namespace:
    args = dict(precision="auto", steps=STEPS, warmup=WARMUP, seed=0, activation_checkpointing=False)
    return argparse.Namespace(**{**args, **changes})


@pytest.fixture(scope="module")
def cells() -> dict[str, dict]:
    return {system: gpu_bench.measure("tiny", BUDGET, system, cell_args(), CPU) for system in ("ours", "hf")}


def test_each_system_reports_speed_memory_and_operators(cells):
    for system, r in cells.items():
        assert (r["shape"], r["budget"], r["system"], r["precision"]) == ("tiny", BUDGET, system, "float32")
        assert r["steps"] == STEPS and r["warmup_steps"] == WARMUP
        assert r["train_tokens_per_s"] > 0 and r["tag_tokens_per_s"] > 0
        assert 0 < r["real_tokens"] <= r["padded_tokens"] <= BUDGET * STEPS
        assert r["peak_memory_bytes"] > 0 and r["peak_memory_kind"] == "peak RSS"
        assert r["ops_per_step"] > 0 and r["syncs_per_step"] is None  # host syncs are counted on a GPU only
        # A head of small random weights starts near a uniform guess over the 9 labels: loss about ln 9.
        assert abs(r["first_loss"] - math.log(9)) < 0.5 and math.isfinite(r["last_loss"])
    assert cells["hf"]["attention"] == "sdpa"
    # The same LoRA on the same shape: the same trainable parameters; PEFT keeps a frozen copy of the head besides.
    head = gpu_bench.TINY.hidden_size * 9 + 9
    assert cells["hf"]["trainable_parameters"] == cells["ours"]["trainable_parameters"]
    assert cells["hf"]["parameters"] == cells["ours"]["parameters"] + head


def test_both_systems_get_the_same_batches_within_the_budget(cells):
    first, again = (gpu_bench.synthetic_batches(gpu_bench.TINY, BUDGET, WARMUP + STEPS, 0, CPU) for _ in range(2))
    assert len(first) == WARMUP + STEPS
    for a, b in zip(first, again):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
        assert a.input_ids.numel() <= BUDGET
    timed = first[WARMUP:]
    real = sum(int(b.attention_mask.sum()) for b in timed)
    assert cells["ours"]["real_tokens"] == cells["hf"]["real_tokens"] == real
    assert cells["ours"]["padded_tokens"] == cells["hf"]["padded_tokens"] == sum(b.input_ids.numel() for b in timed)


def test_activation_checkpointing_trains_the_same(cells):
    result = gpu_bench.measure("tiny", BUDGET, "ours", cell_args(activation_checkpointing=True), CPU)
    # Same seed, same weights and batches: recomputing activations must not change the losses.
    assert result["first_loss"] == pytest.approx(cells["ours"]["first_loss"], rel=1e-5)
    assert result["last_loss"] == pytest.approx(cells["ours"]["last_loss"], rel=1e-5)


def test_compiled_blocks_train_the_same_with_fewer_launches(cells):
    """Same seed, weights and batches: compiling the blocks changes the kernels, not the losses; the fused
    elementwise work launches fewer kernels than eager dispatches operators (the launch count on a GPU). The
    inductor setting that lets the profiler see fused CPU kernels is the cell's own: the process keeps its own."""
    profiling_before = inductor_config.cpp.enable_kernel_profile
    result = gpu_bench.measure("tiny", BUDGET, "ours-compiled", cell_args(), CPU)
    assert inductor_config.cpp.enable_kernel_profile == profiling_before
    assert result["first_loss"] == pytest.approx(cells["ours"]["first_loss"], rel=1e-5)
    assert result["last_loss"] == pytest.approx(cells["ours"]["last_loss"], rel=1e-5)
    assert 0 < result["ops_per_step"] < cells["ours"]["ops_per_step"]


def test_bf16_cells_run_as_on_a_gpu():
    # A GPU's dtypes on the CPU: bf16 base, float32 LoRA and head, every step under bf16 autocast.
    for system in ("ours", "hf"):
        r = gpu_bench.measure("tiny", BUDGET, system, cell_args(precision="bf16", steps=1, warmup=0), CPU)
        assert r["precision"] == "bf16" and math.isfinite(r["first_loss"]) and r["ops_per_step"] > 0, system


def test_main_prints_one_table_with_mfu_and_ratios(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["--device", "cpu", "--budgets", "256", "--steps", "1", "--warmup", "0", "--peak-tflops", "2",
            "--json", str(path)]
    assert gpu_bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "torch " + torch.__version__ in out and "matmul ceiling" in out
    table = out[out.index("| shape |") :].splitlines()
    assert [c.strip() for c in table[0].split("|")[1:-1]] == [
        "shape", "tokens/step (real)", "system", "train tok/s", "train MFU", "tag tok/s", "tag MFU", "train x HF",
        "tag x HF", "peak memory", "ops/step", "syncs/step"]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in table[2:]]
    assert [row[2] for row in rows] == ["ours", "HF + PEFT"] and all(row[0] == "tiny" for row in rows)
    assert rows[1][7] == rows[1][8] == "1.00"  # HF against itself
    saved = json.loads(path.read_text())
    ours, hf = saved["cells"]
    for r in (ours, hf):  # MFU: the stated model FLOPs per token x tokens/s, over the measured ceiling and the peak
        train = r["train_flops_per_token"] * r["train_tokens_per_s"]
        assert r["train_mfu"] == pytest.approx(train / saved["matmul_ceiling_flops"], rel=1e-9)
        assert r["train_mfu_peak"] == pytest.approx(train / 2e12, rel=1e-9)
        tag = r["forward_flops_per_token"] * r["tag_tokens_per_s"]
        assert r["tag_mfu"] == pytest.approx(tag / saved["matmul_ceiling_flops"], rel=1e-9)
    assert ours["train_x_hf"] == pytest.approx(ours["train_tokens_per_s"] / hf["train_tokens_per_s"], rel=1e-9)
    assert rows[0][7] == f"{ours['train_x_hf']:.2f}" and rows[0][10] == f"{ours['ops_per_step']:,}"


def test_a_cell_that_fails_is_a_row_of_its_own(capsys):
    args = cell_args(device="cpu", cell_timeout=0.01)
    record = gpu_bench.run_cell("tiny", 256, "ours", args)
    assert record == {"shape": "tiny", "budget": 256, "system": "ours", "error": "timed out after 0 s"}
    gpu_bench.add_ratios_and_mfu([record], 1e9, None)
    assert gpu_bench.markdown_table([record]).splitlines()[2].startswith("| tiny | 256 | ours | failed: timed out")


@pytest.mark.parametrize("flags, message", [
    (["--budgets", "100"], "--budgets: 100 is under 170, the longest sentence"),
    (["--shapes", "tiny,huge"], "--shapes: unknown shape 'huge'"),
    (["--systems", "ours,vllm"], "--systems: unknown system 'vllm'"),
])
def test_bad_flags_are_one_clear_line(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_bench.main(["--device", "cpu", *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cuda_without_cuda_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU, this one too
    with pytest.raises(SystemExit) as exit_info:
        gpu_bench.main(["--shapes", "tiny", "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device cuda: CUDA is not available" in capsys.readouterr().err


def test_flops_per_token_are_what_torch_counts_on_the_timed_sentences(cells):
    # The same timed sentences (same seed) through the tiny shape, unpadded, counted by FlopCounterMode: a forward,
    # and a forward + backward through the activations of a frozen base (its embedding trainable: an index-add).
    timed = gpu_bench.synthetic_batches(gpu_bench.TINY, BUDGET, WARMUP + STEPS, 0, CPU)[WARMUP:]
    sentences = [row[mask.bool()] for b in timed for row, mask in zip(b.input_ids, b.attention_mask)]
    tokens = sum(len(s) for s in sentences)
    assert tokens == cells["ours"]["real_tokens"]
    torch.manual_seed(0)
    model = Llama(gpu_bench.TINY.replace(causal=False)).requires_grad_(False)
    forward = sum(counted_flops(model.eval(), sentences).values())
    assert cells["ours"]["forward_flops_per_token"] == pytest.approx(forward / tokens, rel=1e-12)
    model.embed_tokens.weight.requires_grad_(True)
    train = sum(counted_flops(model.train(), sentences, backward=True).values())
    assert cells["ours"]["train_flops_per_token"] == pytest.approx(train / tokens, rel=1e-12)


def test_lengths_follow_conll():
    lengths = np.array(gpu_bench.conll_like_lengths(50_000, np.random.default_rng(0)))
    assert lengths.min() >= 2 and lengths.max() <= 170
    assert 20.0 < lengths.mean() < 21.3  # CoNLL-2003 train: 20.6 Llama 3 tokens with BOS
    assert lengths.mean() == pytest.approx(gpu_bench.mean_conll_length(), rel=0.01)
    assert np.median(lengths) == 17
    assert 27.5 < (lengths**2).sum() / lengths.sum() < 29.5  # mean attended length, CoNLL: 28.3


def test_random_tagger_is_frozen_bf16_with_float32_lora_and_head():
    tagger = gpu_bench.build_random_tagger(gpu_bench.TINY, CPU, torch.bfloat16)
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

"""`make bench` on a tiny random checkpoint and a handful of real CoNLL-2003 sentences: each system's worker in
this process (what it trains on, what it counts), and the whole command with its subprocesses and its table."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from bench import systems, versus_hf
from tests.conll_data import CONLL, needs_conll

pytestmark = needs_conll
SENTENCES, BATCH = 10, 4


@pytest.fixture
def args(tiny_model, monkeypatch) -> argparse.Namespace:
    monkeypatch.setenv("CONLL_DIR", str(CONLL))
    return argparse.Namespace(model=str(tiny_model), sentences=SENTENCES, batch_size=BATCH, seed=0)


@pytest.fixture
def spy(monkeypatch) -> dict[str, list]:
    """What each training step was given: the batch, and the gradient clipping of its optimizer update."""
    seen: dict[str, list] = {"batches": [], "clip": []}
    train_step, update = systems.train_step, systems.update

    def recording_train_step(system, model, batch, bf16):
        seen["batches"].append(batch)
        return train_step(system, model, batch, bf16)

    def recording_update(params, optimizer, scheduler=None, clip_grad_norm=None):
        seen["clip"].append(clip_grad_norm)
        return update(params, optimizer, scheduler, clip_grad_norm)

    monkeypatch.setattr(systems, "train_step", recording_train_step)
    monkeypatch.setattr(systems, "update", recording_update)
    return seen


def run_worker(system: str, batching: str, args, spy) -> tuple[dict, list]:
    start = len(spy["batches"])
    record = versus_hf.worker(system, batching, "float32", "store", args)
    return record, spy["batches"][start + versus_hf.WARMUP_STEPS :]  # the timed steps


def test_workers_train_on_every_sentence_once_and_count_its_tokens(args, spy):
    runs = {(system, batching): run_worker(system, batching, args, spy)
            for system, batching in (("hf", "padded"), ("ours", "padded"), ("ours", "bucketed"))}
    assert all(clip == 1.0 for clip in spy["clip"]) and len(spy["clip"]) == 3 * (versus_hf.WARMUP_STEPS + 3)
    for (system, batching), (record, batches) in runs.items():
        assert sorted(i for b in batches for i in b.examples) == list(range(SENTENCES)), (system, batching)
        assert record["real_tokens"] == sum(int(b.attention_mask.sum()) for b in batches)
        assert record["slots"] == sum(b.input_ids.numel() for b in batches) >= record["real_tokens"]
        assert record["train_tokens_per_s"] > 0 and record["tag_tokens_per_s"] > 0
        assert record["peak_rss"] >= record["rss_after_load"] > 0
        # A head of small random weights starts near a uniform guess over the 9 labels: loss about ln 9.
        assert math.isfinite(record["mean_loss"]) and abs(record["mean_loss"] - math.log(9)) < 0.5
    # Both systems get the very same padded tensors, in the same order; buckets carry less padding.
    (hf, hf_batches), (ours, our_batches) = runs["hf", "padded"], runs["ours", "padded"]
    assert len(hf_batches) == len(our_batches) == math.ceil(SENTENCES / BATCH)
    for theirs, mine in zip(hf_batches, our_batches):
        for name in ("input_ids", "attention_mask", "labels"):
            assert torch.equal(getattr(theirs, name), getattr(mine, name)), name
    assert hf["real_tokens"] == ours["real_tokens"] == runs["ours", "bucketed"][0]["real_tokens"]
    assert runs["ours", "bucketed"][0]["slots"] <= ours["slots"]


def test_main_prints_the_table(args, capsys):
    argv = ["--model", args.model, "--sentences", "6", "--batch-size", "3", "--bf16", "on"]
    assert versus_hf.main(argv) == 0
    out = capsys.readouterr().out
    assert "6 CoNLL-2003 training sentences" in out and "matmul ceiling float32" in out and "bf16 " in out
    table = out[out.index("system") :].splitlines()
    assert table[0].split() == ["system", "real/slots", "train", "tok/s", "x", "HF", "train", "MFU", "tag", "tok/s",
                                "x", "HF", "peak", "RSS", "x", "HF", "train", "+RSS", "loss"]
    rows = [line[:40].strip() for line in table[2:8]]
    assert rows == ["HF + PEFT (padded, float32)", "ours (padded, float32)", "ours (bucketed, float32)",
                    "ours (bucketed, float32, recompute)", "HF + PEFT (padded, bf16)", "ours (bucketed, bf16)"]
    assert all(line[40:].split()[2] == "1.00" for line in (table[2], table[6]))  # HF against itself
    assert "bf16 accuracy: ours' mean training loss over the same steps" in out

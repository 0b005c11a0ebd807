"""The precision policy: `auto` is bf16 autocast on a GPU that has it and on a CPU with bf16 matmul instructions,
float32 elsewhere; a run trained and reloaded on a bf16 CPU stores its base in bf16 and tags as it evaluated."""

from __future__ import annotations

import math

import pytest
import torch

from data.conll import read_conll
from predictor import device as device_policy
from predictor.device import cpu_multiplies_in_bf16, use_bf16
from tag.run import load_run
from tests.conll_data import needs_conll
from train.config import TrainConfig
from train.loop import train

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("flags, bf16", [
    ("fpu sse2 avx2 fma", False),  # the AVX2 EPYC of this project's machines
    ("fpu avx2 avx512f avx512bw avx512_vnni", False),  # AVX-512 without bf16 (Ice Lake): int8 is fast, bf16 is not
    ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),  # Zen 4, Cooper Lake
    ("fpu avx2 avx512f amx_bf16 amx_tile amx_int8", True),  # Sapphire Rapids
], ids=["avx2", "avx512", "avx512_bf16", "amx"])
def test_bf16_instructions_are_read_from_the_cpu_flags(tmp_path, flags, bf16):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_multiplies_in_bf16(cpuinfo) is bf16


def test_a_cpu_that_lists_no_flags_is_taken_for_one_without_bf16(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: some CPU\n")
    assert cpu_multiplies_in_bf16(cpuinfo) is False
    assert cpu_multiplies_in_bf16(tmp_path / "missing") is False  # no /proc/cpuinfo: macOS, Windows


@pytest.mark.parametrize("cpu_bf16", [False, True])
@pytest.mark.parametrize("gpu_bf16", [False, True])
def test_auto_is_bf16_where_the_device_multiplies_in_it(monkeypatch, cpu_bf16, gpu_bf16):
    monkeypatch.setattr(device_policy, "cpu_multiplies_in_bf16", lambda: cpu_bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: gpu_bf16)
    assert use_bf16("auto", CPU) is cpu_bf16
    assert use_bf16("auto", CUDA) is gpu_bf16
    assert use_bf16("auto", torch.device("mps")) is False
    for device in (CPU, CUDA):  # asked for, either is taken as it is
        assert use_bf16("float32", device) is False and use_bf16("bf16", device) is True
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bf16, got 'fp16'"):
        use_bf16("fp16", CPU)


@needs_conll
def test_a_default_run_on_a_bf16_cpu_trains_stores_and_tags_in_bf16(tiny_model, conll_slice, tmp_path, monkeypatch,
                                                                     int8_anywhere):
    """With no --precision, a CPU with bf16 instructions trains in bf16 autocast over a bf16 base; the run reloads
    in bf16 there and reproduces its own validation loss, and reloads in float32 on a CPU without."""
    monkeypatch.setattr(device_policy, "cpu_multiplies_in_bf16", lambda: True)
    config = TrainConfig(model=str(tiny_model), data=str(conll_slice), out=str(tmp_path / "run"), limit=32,
                         window="document", max_len=64, stride=48, batch_size=2, batch_tokens=None, max_steps=4,
                         lr=1e-2, train_eval_sentences=0, device="cpu")
    assert config.precision == "auto"
    best = train(config)
    run = load_run(tmp_path / "run", device="cpu", merge=False)  # the adapters apart, as in training
    assert run.bf16
    frozen = {p.dtype for p in run.tagger.backbone.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert {p.dtype for n, p in run.tagger.named_parameters() if "lora_" in n or n.startswith("head.")} == {
        torch.float32}
    sentences = read_conll(conll_slice / "valid.txt")
    result = run.tag(sentences)
    assert result.loss == pytest.approx(best["valid_documents_loss"], rel=1e-6)
    # int8 over a bf16 base (such CPUs have VNNI too): the int8 projections, the rest in bf16
    int8 = load_run(tmp_path / "run", device="cpu", int8=True)
    assert int8.bf16 and math.isfinite(int8.tag(sentences).loss)

    monkeypatch.setattr(device_policy, "cpu_multiplies_in_bf16", lambda: False)
    again = load_run(tmp_path / "run", device="cpu", merge=False)
    assert not again.bf16 and {p.dtype for p in again.tagger.parameters()} == {torch.float32}

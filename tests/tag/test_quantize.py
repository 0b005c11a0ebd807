"""tag/quantize.py: int8 linear layers compute what float32 ones do, and a tagger with them tags as the float32 one."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from data.conll import read_conll
from lora.layer import LoRALinear
from tag import evaluate as evaluate_cli
from tag import predict as predict_cli
from tag import quantize
from tag.quantize import INT8_ON_CPU, Int8Linear, int8_is_fast, use_int8
from tag.run import load_run
from tests.conftest import exact_int_mm
from tests.conll_data import needs_conll


def test_int8_linear_is_exact_on_values_its_scales_represent_and_close_on_others():
    g = torch.Generator().manual_seed(0)
    # Integers up to 127 with a 127 in each row (each token, each output row): the scales are 1 and nothing rounds,
    # so int8 gives float32's answer exactly.
    weight = torch.randint(-127, 128, (24, 40), generator=g).float()
    weight[:, 0] = 127
    x = torch.randint(-127, 128, (2, 5, 40), generator=g).float()
    x[..., 3] = -127
    linear = nn.Linear(40, 24)
    with torch.no_grad():
        linear.weight.copy_(weight)
    torch.testing.assert_close(Int8Linear(linear)(x), linear(x), rtol=0, atol=1e-3)
    # Random values: within the rounding of 8 bits (a relative error of about 1 %).
    linear = nn.Linear(576, 192, bias=False)
    x = torch.randn(7, 576, generator=g)
    error = (Int8Linear(linear)(x) - linear(x)).norm() / linear(x).norm()
    assert 0 < error < 0.02


def test_the_exact_product_of_the_tests_is_torch_int_mm():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (37, 1536), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (1536, 40), generator=g, dtype=torch.int8)
    a[0], b[:, 0], b[0, 0] = 127, -127, -126  # a sum of -24,774,017: odd and beyond 2^24, float32 would round it
    assert torch.equal(exact_int_mm(a, b), torch._int_mm(a, b))


def test_int8_is_fast_reads_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n")
    assert int8_is_fast(cpuinfo) is False  # an AVX2-only x86, as the AVX2 EPYC
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert int8_is_fast(cpuinfo) is True
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx_vnni\n")
    assert int8_is_fast(cpuinfo) is True
    # ARM Linux lists "Features": the dot-product extension (asimddp) or the int8 matrix one (i8mm).
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes crc32 asimddp\n")
    assert int8_is_fast(cpuinfo) is True
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm i8mm\n")
    assert int8_is_fast(cpuinfo) is True
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n")  # a Cortex-A72
    assert int8_is_fast(cpuinfo) is False
    cpuinfo.write_text("processor\t: 0\nmodel name\t: some CPU\n")  # no flags listed: cannot tell
    assert int8_is_fast(cpuinfo) is None
    assert int8_is_fast(tmp_path / "missing") is None


@pytest.mark.parametrize("answers, fast", [
    ({"hw.optional.arm.FEAT_DotProd": "1", "hw.optional.arm.FEAT_I8MM": "0"}, True),  # an Apple M1
    ({"hw.optional.arm.FEAT_DotProd": "0", "hw.optional.arm.FEAT_I8MM": "0"}, False),
    ({}, None),  # an Intel Mac: sysctl knows neither name
])
def test_int8_is_fast_asks_sysctl_on_macos(tmp_path, monkeypatch, answers, fast):
    """A fake `sysctl` first on PATH answers as macOS's does: `sysctl -n NAME` prints the value, or fails."""
    script = "\n".join(f'[ "$2" = "{name}" ] && echo {value} && exit 0' for name, value in answers.items())
    sysctl = tmp_path / "sysctl"
    sysctl.write_text(f"#!/bin/sh\n{script}\necho \"sysctl: unknown oid '$2'\" >&2\nexit 1\n")
    sysctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert int8_is_fast(tmp_path / "no-cpuinfo-on-macos", system="darwin") is fast


def test_int8_without_int8_instructions_is_refused(monkeypatch):
    monkeypatch.setattr(quantize, "int8_is_fast", lambda: False)
    with pytest.raises(ValueError, match="needs a CPU with int8 dot-product instructions .* tag without --int8"):
        use_int8(True, torch.device("cpu"))
    assert use_int8(None, torch.device("cpu")) is False and use_int8(False, torch.device("cpu")) is False
    monkeypatch.setattr(quantize, "int8_is_fast", lambda: None)  # cannot tell: refused too, saying so
    with pytest.raises(ValueError, match="cannot tell whether this CPU has int8 dot-product .* tag without --int8"):
        use_int8(True, torch.device("cpu"))
    assert use_int8(None, torch.device("cpu")) is False and use_int8(False, torch.device("cpu")) is False


def test_an_unmerged_lora_layer_is_refused():
    layer = LoRALinear(nn.Linear(8, 4), r=2, alpha=4)
    with pytest.raises(ValueError, match="after merging it"):
        Int8Linear(layer)
    layer.merge()
    assert Int8Linear(layer).out_features == 4


@needs_conll
def test_int8_tagger_tags_as_the_float32_one(trained_run, conll_slice, int8_anywhere):
    sentences = read_conll(conll_slice / "valid.txt")
    results = {}
    for int8 in (False, True):
        run = load_run(trained_run, device="cpu", int8=int8)
        assert run.int8 == int8
        results[int8] = run.tag(sentences)
    projections = [m for name, m in run.tagger.backbone.layers.named_modules() if name.endswith("_proj")]
    assert len(projections) == 7 * len(run.tagger.backbone.layers)
    assert all(type(m) is Int8Linear for m in projections)
    assert run.tagger.head.weight.dtype == run.tagger.backbone.embed_tokens.weight.dtype == torch.float32

    # The run is trained for 60 steps only (F1 about 30), so many of its words sit near a decision boundary, and
    # how many depends on the CPU that trained it. Int8's rounding may flip those, and only those: wherever float32
    # gives its tag a probability above 0.9 (most words), int8 tags the word the same.
    probabilities = {k: np.exp(np.concatenate(r.log_probs)) for k, r in results.items()}  # (words, labels)
    same = np.array([a == b for x, y in zip(results[True].tags, results[False].tags) for a, b in zip(x, y)])
    sure = probabilities[False].max(axis=1) > 0.9
    assert sure.mean() > 0.5 and same[sure].all()
    assert same.mean() > 0.97  # a wrong scale or layout would change far more
    assert np.abs(probabilities[True] - probabilities[False]).mean() < 0.01


def test_int8_is_a_cpu_choice(int8_anywhere):
    assert use_int8(None, torch.device("cpu")) == INT8_ON_CPU
    assert use_int8(False, torch.device("cpu")) is False and use_int8(True, torch.device("cpu")) is True
    assert use_int8(None, torch.device("cuda")) is False
    with pytest.raises(ValueError, match="int8 tagging runs on a CPU, not on cuda"):
        use_int8(True, torch.device("cuda"))


@needs_conll
def test_commands_refuse_int8_without_int8_instructions_in_one_line(trained_run, conll_slice, monkeypatch, capsys):
    monkeypatch.setattr(quantize, "int8_is_fast", lambda: False)
    assert predict_cli.main(["--run", str(trained_run), "--int8", "Angela Merkel visited Paris"]) == 2
    assert evaluate_cli.main(["--run", str(trained_run), "--data", str(conll_slice / "valid.txt"), "--int8"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("error: int8 tagging needs a CPU with int8 dot-product") == 2


@needs_conll
def test_int8_needs_the_merged_weights(trained_run, int8_anywhere):
    with pytest.raises(ValueError, match="int8 quantizes the merged weights"):
        load_run(trained_run, device="cpu", merge=False, int8=True)

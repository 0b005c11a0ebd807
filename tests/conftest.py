"""Fixtures shared by several test files."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.conll_data import CONLL, WNUT, require, slice_conll
from weights.convert_gguf import DEFAULT_OUT, convert


@pytest.fixture(autouse=True, scope="session")
def float32_on_every_cpu():
    """`--precision auto` multiplies in bf16 on CPUs with bf16 instructions (predictor/device.py), and CI draws
    machines with and without them: the whole session runs as on a CPU without, so that no expected number depends on
    the draw. tests/predictor/test_device.py sets the other answer where it tests it; the runs that tests hand to a
    subprocess (random_run, trained_run) set float32 themselves."""
    from predictor import device

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(device, "cpu_multiplies_in_bf16", lambda: False)
        yield


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted from its GGUF once (some seconds) and kept in weights/."""
    return convert(out_dir=DEFAULT_OUT)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, smollm2_dir) -> Path:
    """A random 2-layer Llama that speaks SmolLM2's tokenizer: fast enough to train many steps in a test."""
    from tests.hf_reference import make_hf_checkpoint  # imports transformers: only when a test asks for it

    folder = make_hf_checkpoint(tmp_path_factory.mktemp("tiny"), vocab_size=49152, hidden_size=32,
                                intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=512)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_dir / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def random_run(tmp_path_factory, tiny_model) -> Path:
    """A run directory of the tiny random model with random LoRA B and head, as training would leave it but untrained:
    it tags in milliseconds and finds entities of every type in any text, which tests of what surrounds the tagger
    (a server, a benchmark) need."""
    from data.labels import LabelSet
    from tests.random_weights import randomize_tuned
    from predictor.run_dir import save_tuned
    from train.build import build_tagger
    from train.config import TrainConfig
    from train.run_dir import write_run_info

    run_dir = tmp_path_factory.mktemp("random_run")
    config = TrainConfig(model=str(tiny_model), out=str(run_dir), device="cpu", precision="float32")
    labels = LabelSet.from_types(["PER", "ORG", "LOC", "MISC"])
    tagger = build_tagger(config, len(labels), torch.device("cpu"))
    randomize_tuned(tagger, seed=2)
    write_run_info(run_dir, config, labels, sources={})
    save_tuned(tagger, run_dir, config.finetune)
    return run_dir


@pytest.fixture(scope="session")
def conll_dir() -> Path:
    """The real CoNLL-2003 (tests/conll_data.py says where); a test that asks for it fails without it."""
    return require(CONLL, "CoNLL-2003", "CONLL_DIR")


@pytest.fixture(scope="session")
def wnut_dir() -> Path:
    """The real WNUT-17, like `conll_dir`."""
    return require(WNUT, "WNUT-17", "WNUT_DIR")


@pytest.fixture(scope="session")
def conll_slice(tmp_path_factory, conll_dir) -> Path:
    """The first 240 training and 120 validation sentences of the real CoNLL-2003, as a data folder."""
    folder = tmp_path_factory.mktemp("conll")
    slice_conll(conll_dir / "train.txt", folder / "train.txt", 240)
    slice_conll(conll_dir / "valid.txt", folder / "valid.txt", 120)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, conll_slice, smollm2_dir) -> Path:
    """SmolLM2-135M fine-tuned for 60 steps on 240 real training sentences: the run that train/ and tag/ tests read.
    It evaluates its subsets every 20 steps and fully every 30."""
    from train.config import TrainConfig
    from train.loop import train

    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(model=str(smollm2_dir), data=str(conll_slice), out=str(out), window="sentence",
                         epochs=2, batch_size=8, batch_tokens=None, lr=1e-3, eval_every=30, checkpoint_every=30,
                         subset_eval_every=20, subset_eval_sentences=40, precision="float32")
    train(config)
    return out


def exact_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch._int_mm's int8 x int8 -> int32 product, computed in float64: exact while |sums| < 2^53."""
    return (a.double() @ b.double()).to(torch.int32)


INT8_KERNEL_RUNS: Counter[str] = Counter()  # kernel -> how many tests ran it through int8_anywhere


@pytest.fixture
def int8_anywhere(monkeypatch):
    """Int8 tagging on any CPU. Without int8 dot-product instructions tag/quantize.py refuses it, and torch._int_mm
    runs 40x slower than float32: the tests that tag real text in int8 would take most of the suite's time. There
    the product is `exact_int_mm` instead, which tests/tag/test_quantize.py checks against torch._int_mm itself.
    The run's summary says which kernel ran (pytest_terminal_summary)."""
    from tag import quantize

    kernel = "torch._int_mm"
    if not quantize.int8_is_fast():
        monkeypatch.setattr(quantize, "int8_is_fast", lambda: True)
        monkeypatch.setattr(torch, "_int_mm", exact_int_mm)
        kernel = "exact_int_mm"
    INT8_KERNEL_RUNS[kernel] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    """Which int8 kernel the int8 tests ran, so that a run on a CPU without int8 instructions says it did not test
    torch._int_mm inside the tagger."""
    if not INT8_KERNEL_RUNS:
        return
    terminalreporter.write_sep("-", "int8 kernel")
    for kernel, n in INT8_KERNEL_RUNS.items():
        count = f"{n} test{'s' if n > 1 else ''}"
        if kernel == "exact_int_mm":
            terminalreporter.write_line(
                f"exact_int_mm (float64) stood in for torch._int_mm in {count}: this CPU has no int8 dot-product "
                "instructions (or tag/quantize.py cannot tell), so these tests did not run the real kernel; "
                "tests/tag/test_quantize.py compares the stand-in with it")
        else:
            terminalreporter.write_line(f"torch._int_mm ran in {count}")

"""bench.emulated_bf16: no bf16 matrix product reaches a native kernel, in training or in tagging, and the numbers
are native bf16 autocast's (the oracle: torch's own CPU bf16 kernels, slow here but exact in kind)."""

from __future__ import annotations

import argparse
import contextlib

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench import emulated_bf16
from bench.emulated_bf16 import EmulatedBF16
from bench.gpu import CONFIGS, build, synthetic_batches
from bench.systems import tag_batch, train_step
from predictor.device import autocast
from tests.random_weights import randomize_tuned

CPU = torch.device("cpu")
PRODUCT_NAMES = ("mm", "addmm", "bmm", "baddbmm", "linear", "matmul", "scaled_dot_product")


class NativeProducts(TorchDispatchMode):
    """Below EmulatedBF16 on the mode stack: sees what it lets through to the kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.bf16_products: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if any(p in name for p in PRODUCT_NAMES) and any(
                isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
            self.bf16_products.append(name)
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def batch():
    return synthetic_batches(CONFIGS["tiny"], 256, 1, seed=0, device=CPU)[0]


def tiny_bf16_tagger() -> torch.nn.Module:
    model = build("ours", CONFIGS["tiny"], argparse.Namespace(seed=0, activation_checkpointing=False), CPU, bf16=True)
    randomize_tuned(model, seed=0)  # LoRA B starts at zero: random values give every adapter a gradient to compare
    return model.eval()  # no dropout: the two runs must see the same forward


def test_no_bf16_product_reaches_a_native_kernel(batch):
    model = tiny_bf16_tagger()
    with NativeProducts() as native, EmulatedBF16() as emulated:
        train_step("ours", model, batch, bf16=True)
        with torch.inference_mode(), autocast(CPU, True):
            tag_batch("ours", model, batch)
    assert native.bf16_products == []
    # Training sees the decomposed products and the fused attention; inference_mode sees linear and SDPA whole.
    assert {"aten.addmm.default", "aten.mm.default", "aten.linear.default",
            "aten.scaled_dot_product_attention.default",
            "aten._scaled_dot_product_flash_attention_for_cpu_backward.default"} <= set(emulated.emulated)


def test_losses_gradients_and_logits_are_native_bf16s(batch):
    runs = {}
    for emulate in (False, True):
        model = tiny_bf16_tagger()
        with EmulatedBF16() if emulate else contextlib.nullcontext():
            loss = train_step("ours", model, batch, bf16=True)
            with torch.inference_mode(), autocast(CPU, True):
                logits = tag_batch("ours", model, batch).float()
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
        runs[emulate] = float(loss), grads, logits
    (native_loss, native_grads, native_logits), (loss, grads, logits) = runs[False], runs[True]
    assert loss == pytest.approx(native_loss, rel=2e-3)
    assert grads.keys() == native_grads.keys() and len(grads) > 10
    for name, g in grads.items():
        cosine = torch.nn.functional.cosine_similarity(g.flatten(), native_grads[name].flatten(), dim=0)
        assert cosine > 0.999, name
    # A few bf16 roundings apart (2^-8 relative each), not more
    assert (logits - native_logits).abs().max() <= 0.05 * native_logits.abs().max()


def test_the_command_sets_the_precision_itself(capsys):
    assert emulated_bf16.main(["--data", "anywhere", "--precision", "float32"]) == 2
    assert "sets --precision bf16 itself" in capsys.readouterr().err

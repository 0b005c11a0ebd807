"""train/step.py: micro-batches and padding change nothing in the gradient; `update` is clip + AdamW + schedule,
the clipping checked against a global norm computed here, not against torch's clip_grad_norm_ that it calls."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from data.align import build_examples
from data.batching import collate
from data.conll import read_conll
from data.labels import LabelSet
from model import load_tokenizer
from tests.conll_data import needs_conll
from train.build import build_tagger
from train.config import TrainConfig
from train.optim import AdamW
from train.schedule import WarmupCosine
from train.step import forward_backward, micro_batches, update

LABELS = LabelSet.from_types(["PER", "ORG", "LOC", "MISC"])  # CoNLL-2003's, as a run learns them


@needs_conll
def test_gradient_accumulation_and_padding_equal_per_sentence_computation(tiny_model, conll_slice):
    """One padded batch, the same batch as 4 micro-batches, and each sentence alone give the same gradient."""
    config = TrainConfig(model=str(tiny_model), head_dropout=0.0)
    tagger = build_tagger(config, len(LABELS), torch.device("cpu"))
    with torch.no_grad():
        for name, p in tagger.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    tokenizer = load_tokenizer(tiny_model)
    examples = build_examples(read_conll(conll_slice / "train.txt")[:8], tokenizer, 256, labels=LABELS)
    rows = list(range(8))

    def gradient(parts: list[list[int]]) -> tuple[float, list[torch.Tensor]]:
        tagger.zero_grad()
        loss, _ = forward_backward(tagger, [collate(examples, p, tokenizer.pad_id) for p in parts], torch.device("cpu"),
                             bf16=False)
        return loss, [p.grad.clone() for p in tagger.parameters() if p.requires_grad]

    one_loss, one = gradient([rows])
    for parts in ([rows[:2], rows[2:4], rows[4:6], rows[6:]], [[r] for r in rows]):
        loss, grads = gradient(parts)
        assert loss == pytest.approx(one_loss, rel=1e-5)
        for a, b in zip(one, grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)




def test_micro_batches_keep_order_and_cover_the_batch():
    assert micro_batches([5, 3, 9, 1, 7], 2) == [[5, 3, 9], [1, 7]]
    assert micro_batches([5, 3], 1) == [[5, 3]]


def clipped_by_hand(grads: list[torch.Tensor], max_norm: float) -> tuple[float, list[torch.Tensor]]:
    """The global L2 norm of the gradients, summed in float64, and the gradients scaled to max_norm when above it
    (by max_norm / (norm + 1e-6), the epsilon torch's clip_grad_norm_ documents)."""
    norm = math.sqrt(sum(float(g.double().square().sum()) for g in grads))
    scale = min(1.0, max_norm / (norm + 1e-6))
    return norm, [(g.double() * scale).to(g.dtype) for g in grads]


def test_update_clips_steps_zeroes_and_schedules_like_torch():
    """Against a norm and a clipping computed here in float64, torch.optim.AdamW stepping the clipped gradients,
    and a LambdaLR of the same schedule."""
    torch.manual_seed(0)
    ours = torch.nn.Linear(6, 4)
    reference = copy.deepcopy(ours)
    optimizer = AdamW(ours.parameters(), lr=1e-2, weight_decay=0.1)
    scheduler = WarmupCosine(optimizer, total_steps=5, warmup_steps=2, min_lr_ratio=0.1)
    torch_optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
    lrs = [optimizer.param_groups[0]["lr"]]
    for step in range(5):
        x = torch.randn(3, 6) * 10  # large enough that clipping at 0.5 bites
        ours(x).square().sum().backward()
        grad_norm, lr = update(list(ours.parameters()), optimizer, scheduler, clip_grad_norm=0.5)
        lrs.append(optimizer.param_groups[0]["lr"])
        assert lr == lrs[step]
        for group in torch_optimizer.param_groups:
            group["lr"] = lr
        reference(x).square().sum().backward()
        expected_norm, clipped = clipped_by_hand([p.grad for p in reference.parameters()], 0.5)
        for p, g in zip(reference.parameters(), clipped):
            p.grad = g
        assert math.sqrt(sum(float(g.double().square().sum()) for g in clipped)) == pytest.approx(0.5, rel=1e-5)
        torch_optimizer.step()
        torch_optimizer.zero_grad()
        assert float(grad_norm) == pytest.approx(expected_norm, rel=1e-6) and grad_norm > 0.5
        assert all(p.grad is None for p in ours.parameters())
        for a, b in zip(ours.parameters(), reference.parameters()):
            torch.testing.assert_close(a, b)
    assert lrs[1] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(1e-3)  # warmup peak, then the floor
    x = torch.randn(2, 6)
    ours(x).sum().backward()
    assert update(list(ours.parameters()), optimizer)[0] is None  # no clipping asked: no norm


def test_update_leaves_gradients_below_the_limit_alone():
    """A norm below the limit is reported and nothing is scaled: one AdamW step on the raw gradients."""
    torch.manual_seed(0)
    ours = torch.nn.Linear(6, 4)
    reference = copy.deepcopy(ours)
    x = torch.randn(3, 6) * 0.01
    for model in (ours, reference):
        model(x).sum().backward()
    expected_norm, clipped = clipped_by_hand([p.grad for p in reference.parameters()], 1e3)
    assert all(torch.equal(g, p.grad) for g, p in zip(clipped, reference.parameters()))
    grad_norm, _ = update(list(ours.parameters()), AdamW(ours.parameters(), lr=1e-2), clip_grad_norm=1e3)
    torch.optim.AdamW(reference.parameters(), lr=1e-2).step()
    assert float(grad_norm) == pytest.approx(expected_norm, rel=1e-6) and grad_norm < 1e3
    for a, b in zip(ours.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)


def test_an_empty_batch_is_one_empty_micro_batch():
    assert micro_batches([], 2) == [[]]

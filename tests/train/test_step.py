"""train/step.py: micro-batches and padding change nothing in the gradient; `update` is clip + AdamW + schedule,
the clipping checked against a global norm computed here, not against torch's clip_grad_norm_ that it calls."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from data.align import build_examples
from data.batching import bucketed_plan, collate
from data.conll import read_conll
from data.labels import LabelSet
from lora.inject import LLAMA_TARGETS, inject_lora, trainable_parameters
from model import load_tokenizer
from tests.conll_data import needs_conll
from tests.dispatched import Dispatched
from tests.host_syncs import recorded_host_syncs
from tests.tiny import tiny_tagger
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
        return float(loss), [p.grad.clone() for p in tagger.parameters() if p.requires_grad]

    one_loss, one = gradient([rows])
    for parts in ([rows[:2], rows[2:4], rows[4:6], rows[6:]], [[r] for r in rows]):
        loss, grads = gradient(parts)
        assert loss == pytest.approx(one_loss, rel=1e-5)
        for a, b in zip(one, grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@needs_conll
def test_a_training_step_never_waits_for_the_device(tiny_model, conll_slice):
    """forward_backward and update of padded micro-batches read no value of a tensor: every size the step needs
    comes from the host, where collate built the batch (the proxy and its blind spot: tests/host_syncs.py)."""
    config = TrainConfig(model=str(tiny_model))
    tagger = build_tagger(config, len(LABELS), torch.device("cpu")).train()
    tokenizer = load_tokenizer(tiny_model)
    examples = build_examples(read_conll(conll_slice / "train.txt")[:6], tokenizer, 256, labels=LABELS)
    batches = [collate(examples, part, tokenizer.pad_id) for part in ([0, 1, 2], [3, 4, 5])]
    assert any(not b.attention_mask.all() for b in batches), "no padding: the padded path is not exercised"
    params = [p for p in tagger.parameters() if p.requires_grad]
    optimizer = AdamW(params, lr=1e-3)
    with recorded_host_syncs() as syncs:
        loss, tokens = forward_backward(tagger, batches, torch.device("cpu"), bf16=False)
        update(params, optimizer, clip_grad_norm=1.0)
    assert syncs == [], sorted(set(syncs))
    assert math.isfinite(float(loss)) and int(tokens) == sum(len(e.input_ids) for e in examples)


@needs_conll
def test_training_on_the_jagged_path_gives_the_losses_of_the_padded_grid(tiny_model, conll_slice):
    """20 steps of the tiny tagger, dropout on, from the same seed: the losses and the trained adapter of attention on
    the jagged stack equal those of attention on the padded grid, to float tolerance."""
    tokenizer = load_tokenizer(tiny_model)
    examples = build_examples(read_conll(conll_slice / "train.txt")[:80], tokenizer, 256, labels=LABELS)
    plan = bucketed_plan([len(e.input_ids) for e in examples], batch_size=4, seed=0)[:20]

    def train(jagged: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        tagger = build_tagger(TrainConfig(model=str(tiny_model), lora_dropout=0.1), len(LABELS),
                              torch.device("cpu")).train()
        params = [p for p in tagger.parameters() if p.requires_grad]
        optimizer = AdamW(params, lr=1e-2)
        losses = []
        for part in plan:
            batch = collate(examples, part, tokenizer.pad_id)
            batch = dataclasses.replace(batch, tokens=dataclasses.replace(batch.tokens, jagged=jagged))
            loss, _ = forward_backward(tagger, [batch], torch.device("cpu"), bf16=False)
            update(params, optimizer, clip_grad_norm=1.0)
            losses.append(float(loss))
        return losses, {name: p.detach() for name, p in tagger.named_parameters() if p.requires_grad}

    (padded_losses, padded), (jagged_losses, jagged) = train(jagged=False), train(jagged=True)
    assert sum(any(not b.all() for b in collate(examples, part, 0).attention_mask) for part in plan) >= 10
    assert jagged_losses == pytest.approx(padded_losses, rel=1e-4)
    assert padded_losses[-1] < padded_losses[0], "training did not move, so the comparison proves little"
    # atol 1e-4 is 1 % of one Adam step at lr 1e-2: Adam's normalisation can blow a near-zero gradient's rounding
    # (the two paths sum in another order) up to a few 1e-5 in the odd element.
    for name, tensor in padded.items():
        torch.testing.assert_close(jagged[name], tensor, rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


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


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_clipping_and_adamw_are_a_handful_of_operators_however_many_tensors(weight_decay):
    """A LoRA tagger has hundreds of small trainable tensors (422 for SmolLM2-135M). `update` handles all of them in
    each of its operators (multi-tensor `_foreach` kernels), so its operator count does not grow with their number."""
    counts = {}
    for layers in (1, 4):
        tagger = tiny_tagger(num_layers=layers)
        inject_lora(tagger, LLAMA_TARGETS, r=4, alpha=8, trainable=("head",))
        params = list(trainable_parameters(tagger).values())
        optimizer = AdamW(params, lr=1e-3, weight_decay=weight_decay)
        for step in range(2):  # the first step makes the optimizer's state
            for p in params:
                p.grad = torch.randn_like(p)
            with Dispatched() as dispatched:
                update(params, optimizer, clip_grad_norm=1.0)
        counts[len(params)] = dispatched.aten
    assert list(counts) == [16, 58]
    assert counts[16] == counts[58] <= 20, counts

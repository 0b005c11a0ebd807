"""The token-classification head: loss over labelled positions only, no vocabulary projection."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from model.tagger import IGNORE_INDEX, Tagger, labelled_cross_entropy
from tests import tiny


def tiny_tagger(causal: bool = False) -> Tagger:
    return tiny.tiny_tagger(causal=causal).eval()


def test_loss_is_cross_entropy_over_labelled_positions_only():
    tagger = tiny_tagger()
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    labels = torch.randint(0, 9, (2, 7))
    labels[0, 2] = labels[1, 1] = IGNORE_INDEX
    labels[1, 4:] = IGNORE_INDEX
    logits = tagger(ids, mask)
    expected = F.cross_entropy(logits.reshape(-1, 9), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(tagger.loss(ids, labels, mask), expected)


def test_labelled_cross_entropy_is_minus_the_log_likelihood_of_each_label_in_float32():
    g = torch.Generator().manual_seed(2)
    logits = (3 * torch.randn(2, 6, 9, generator=g)).to(torch.bfloat16)  # (B, T, L), as under autocast
    labels = torch.randint(0, 9, (2, 6), generator=g)
    labels[0, 0] = labels[1, 2] = IGNORE_INDEX
    labels[1, 4:] = IGNORE_INDEX
    terms = [-logits[b, t].double().log_softmax(-1)[labels[b, t]]
             for b in range(2) for t in range(6) if labels[b, t] != IGNORE_INDEX]
    total = labelled_cross_entropy(logits, labels, reduction="sum")
    assert total.dtype == torch.float32 and len(terms) == 8
    torch.testing.assert_close(total.double(), sum(terms), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(labelled_cross_entropy(logits, labels).double(), sum(terms) / 8, rtol=1e-6, atol=1e-6)
    flat = labels != IGNORE_INDEX  # (N, L) and (N,) give the same
    torch.testing.assert_close(labelled_cross_entropy(logits[flat], labels[flat], reduction="sum"), total)


def test_vocabulary_projection_is_never_computed():
    tagger = tiny_tagger()

    def forbidden(*_):
        raise AssertionError("the tagger must not compute vocabulary logits")

    tagger.backbone.lm_head.register_forward_hook(forbidden)
    ids = torch.randint(0, 50, (1, 5))
    assert tagger(ids).shape == (1, 5, 9)
    tagger.loss(ids, torch.zeros(1, 5, dtype=torch.long)).backward()


def test_bidirectional_tagger_sees_the_right_context():
    ids = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(1))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 50
    for causal in (True, False):
        tagger = tiny_tagger(causal)
        with torch.no_grad():
            moved = (tagger(ids)[0, 0] - tagger(changed)[0, 0]).abs().max()
        assert (moved > 0) == (not causal)

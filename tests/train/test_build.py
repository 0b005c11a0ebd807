"""train/build.compile_blocks: compiled blocks compute what the eager ones do, and compile once, not per batch.

Every batch has its own layout (rows, their lengths, how many tokens are real). A compiled block that saw that
layout would be recompiled for each new batch until dynamo's recompile limit, and then run eager. Dynamo's own
counters (`unique_graphs`) say how many graphs were compiled; the eager tagger is the oracle for the values.
"""

from __future__ import annotations

import copy

import torch
from torch._dynamo.utils import counters

from lora.inject import LLAMA_TARGETS, inject_lora, trainable_parameters
from model.padding_free import RealTokens
from model.tagger import IGNORE_INDEX, Tagger, labelled_positions
from tests.random_weights import randomize_tuned
from tests.tiny import tiny_tagger
from train.build import compile_blocks

# Row lengths of the batches, one after the other: rows, longest row, real tokens and padding all change.
LAYOUTS = ([5, 7, 2], [9, 4], [11, 11, 3, 6], [13], [2, 3, 4, 5, 6], [20, 17], [30, 1, 2], [8, 8])


def batch(lengths: list[int], generator: torch.Generator):
    """A right-padded batch of random ids, a label on about two thirds of the real tokens, and its host layout."""
    B, T = len(lengths), max(lengths)
    real = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)
    ids = torch.randint(0, 50, (B, T), generator=generator)
    labels = torch.randint(0, 9, (B, T), generator=generator)
    labels[~real | (torch.rand(B, T, generator=generator) < 1 / 3)] = IGNORE_INDEX
    return ids, real.long(), labels, RealTokens.from_lengths(lengths, T)


def loss_and_gradients(tagger: Tagger, ids, mask, labels, tokens) -> tuple[torch.Tensor, list[torch.Tensor]]:
    tagger.zero_grad(set_to_none=True)
    loss = tagger.loss(ids, labels, mask, tokens=tokens, labelled=labelled_positions(labels))
    loss.backward()
    return loss.detach(), [p.grad for p in trainable_parameters(tagger).values()]


def test_compiled_blocks_equal_eager_and_compile_once_for_every_batch_layout():
    eager = tiny_tagger(num_layers=3)
    inject_lora(eager, LLAMA_TARGETS, r=4, alpha=8, trainable=("head",))
    randomize_tuned(eager, seed=0)  # B = 0 would leave A without a gradient to compare
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    counters.clear()
    compile_blocks(compiled)

    generator = torch.Generator().manual_seed(1)
    graphs_after_first_batches = None
    for step, lengths in enumerate(LAYOUTS):
        ids, mask, labels, tokens = batch(lengths, generator)
        expected_loss, expected_grads = loss_and_gradients(eager.train(), ids, mask, labels, tokens)
        loss, grads = loss_and_gradients(compiled.train(), ids, mask, labels, tokens)
        torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
        for got, want in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        with torch.no_grad():  # tagging, as evaluation does between training steps
            torch.testing.assert_close(compiled.eval()(ids, mask, tokens), eager.eval()(ids, mask, tokens),
                                       rtol=1e-5, atol=1e-5)
        if step == 1:
            # The first two batches compile what a run needs: with and without gradients, the first block (whose
            # input needs no gradient) and the others. Every later layout must reuse those graphs.
            graphs_after_first_batches = counters["stats"]["unique_graphs"]
            assert graphs_after_first_batches > 0, "nothing was compiled"
    assert counters["stats"]["unique_graphs"] == graphs_after_first_batches, dict(counters["recompiles"])

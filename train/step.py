"""One optimizer step of fine-tuning, written once: the loop, the benchmarks and the tests call these.

    forward_backward   loss of the step's micro-batches, backward, gradients summed over ranks
    update             clip the gradient norm, AdamW step, clear the gradients, advance the schedule
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from data.batching import Batch
from lora.inject import trainable_parameters
from model.tagger import Tagger
from predictor.device import autocast
from train.distributed import SINGLE_PROCESS, World, sum_gradients_over_ranks, sum_over_ranks
from train.schedule import WarmupCosine


def micro_batches(batch: list[int], parts: int) -> list[list[int]]:
    """The examples of one step's batch in `parts` micro-batches (gradient accumulation), in order. An empty batch
    (see data.batching.shard_plan) stays one empty micro-batch: the rank still takes the step."""
    if not batch:
        return [[]]
    size = math.ceil(len(batch) / parts)
    return [batch[i : i + size] for i in range(0, len(batch), size)]


def forward_backward(
    tagger: Tagger, batches: Sequence[Batch], device: torch.device, bf16: bool, world: World = SINGLE_PROCESS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward over the micro-batches of one optimizer step (this rank's share of it).

    The loss is the mean over every labelled token of the whole step, on all ranks, so accumulating
    micro-batches, or summing the gradients of ranks, gives the same gradient as one large batch. Returns that
    loss and the number of real (non-pad) tokens processed, both over all ranks, as 0-dim tensors: the counts come
    from the host (each batch's layout), and the loss stays on the device, so the step never waits for it. A caller
    reads them (`float(loss)`) when it logs.
    """
    labelled_total = sum(b.labelled.numel() for b in batches)
    tokens = sum(b.tokens.count for b in batches)
    if world.distributed:
        # Summed on the device (exact in float64): the loss is divided by a tensor that nothing waits for.
        counts = torch.tensor([labelled_total, tokens], dtype=torch.float64).to(device, non_blocking=True)
        labelled_total, tokens = sum_over_ranks(counts, world).float()
    loss_total = torch.zeros((), device=device)
    for batch in batches:
        with autocast(device, bf16):
            loss = tagger.loss(batch.input_ids, batch.labels, batch.attention_mask, reduction="sum",
                               tokens=batch.tokens, labelled=batch.labelled) / labelled_total
        loss.backward()
        loss_total += loss.detach()
    if world.distributed:
        sum_gradients_over_ranks(list(trainable_parameters(tagger).values()))
        loss_total = sum_over_ranks(loss_total, world)
    return loss_total, torch.as_tensor(tokens)


def update(
    params: Sequence[torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: WarmupCosine | None = None,
    clip_grad_norm: float | None = None,
) -> tuple[torch.Tensor | None, float]:
    """Apply the accumulated gradients: clip their global norm, step, zero them, advance the schedule.

    Returns the gradient norm before clipping (None without clipping), left on the device so that a GPU need
    not wait for it, and the learning rate the step used.
    """
    grad_norm = None
    if clip_grad_norm is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return grad_norm, lr

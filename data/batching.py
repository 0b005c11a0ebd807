"""Batches of Examples: length-bucketed, padded on the right; seeded, deterministic, shardable.

Batching happens in two steps. A *plan* says which examples go together: a list of batches, a
batch a list of example indices, one example per row. Plans are cheap, so coverage and sharding
are decided on them; `collate` then turns one batch of a plan into tensors. Every example is in
exactly one batch of a plan.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from data.align import Example
from model.padding_free import RealTokens
from model.tagger import IGNORE_INDEX, labelled_positions

Plan = list[list[int]]  # batches -> example indices, one per row


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long, pad_id on padding
    attention_mask: torch.Tensor  # (B, T) long, 1 on real tokens, 0 on padding
    labels: torch.Tensor  # (B, T) long, IGNORE_INDEX on padding and unlabelled tokens
    examples: list[int]  # the example in each row, to map predictions back
    # What the model would otherwise ask the device for (a wait for every kernel queued before it), known here:
    tokens: RealTokens  # where the real tokens sit (rows' lengths, flat positions, offsets)
    labelled: torch.Tensor  # (M,) long, flat (B * T) positions of the labels != IGNORE_INDEX, in order

    def to(self, device: torch.device | str) -> "Batch":
        tensors = (self.input_ids, self.attention_mask, self.labels)
        return Batch(*(t.to(device, non_blocking=True) for t in tensors), self.examples, self.tokens.to(device),
                     self.labelled.to(device, non_blocking=True))


def bucketed_plan(
    lengths: Sequence[int],
    *,
    batch_size: int | None = None,
    max_tokens: int | None = None,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    chunk_size: int = 1024,
) -> Plan:
    """One example per row, rows of similar length together so padding stays small.

    Training (shuffle=True): examples are shuffled, cut into chunks of `chunk_size`, sorted by
    length (longest first) within each chunk, batched, and the batches shuffled; the seed and
    epoch fix the order. Evaluation (shuffle=False): one chunk of everything, longest first.
    A batch holds `batch_size` examples, or as many as keep rows x longest row <= `max_tokens`.
    Besides the lengths every parameter is a keyword with a default: a caller names the one size it sets and the
    order it wants, training's or evaluation's.
    """
    if (batch_size is None) == (max_tokens is None):
        raise ValueError("give exactly one of batch_size and max_tokens")
    if (batch_size is not None and batch_size < 1) or (max_tokens is not None and max_tokens < 1):
        raise ValueError(f"batch_size and max_tokens must be positive, got {batch_size}, {max_tokens}")
    if max_tokens is not None and (too_long := [i for i, n in enumerate(lengths) if n > max_tokens]):
        raise ValueError(f"example {too_long[0]} has {lengths[too_long[0]]} tokens, more than max_tokens={max_tokens}")
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist() if shuffle else list(range(len(lengths)))
    chunks = [order[i : i + chunk_size] for i in range(0, len(order), chunk_size)] if shuffle else [order]
    plan: Plan = []
    for chunk in chunks:
        chunk.sort(key=lambda i: -lengths[i])  # stable: ties keep the (shuffled) order
        batch: list[int] = []
        for i in chunk:  # longest first, so batch[0] sets the padded length
            if batch_size is not None:
                full = len(batch) == batch_size
            else:
                full = bool(batch) and (len(batch) + 1) * lengths[batch[0]] > max_tokens
            if full:
                plan.append(batch)
                batch = []
            batch.append(i)
        if batch:
            plan.append(batch)
    if shuffle:
        plan = [plan[k] for k in rng.permutation(len(plan))]
    return plan


def shard_plan(plan: Plan, rank: int, world_size: int) -> Plan:
    """The batches of `rank`: every world_size-th batch, so that every example is on one rank once.

    All ranks must take the same number of steps. The largest batches are split in two until the batches divide
    evenly among the ranks; when only single-example batches are left and they do not, the last step of the
    last ranks is an empty batch, which `collate` turns into an idle one (no example repeated or dropped).
    Every rank must call this on the same plan (same seed and epoch)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    plan = list(plan)
    while len(plan) % world_size:
        k = max(range(len(plan)), key=lambda b: len(plan[b]))  # first batch with the most examples
        if len(plan[k]) < 2:
            plan += [[] for _ in range(-len(plan) % world_size)]
            break
        half = len(plan[k]) // 2
        plan[k : k + 1] = [plan[k][:half], plan[k][half:]]
    return plan[rank::world_size]


def collate(examples: Sequence[Example], batch: Sequence[int], pad_id: int) -> Batch:
    """Tensors for one batch of a plan, right-padded to its longest example.

    An empty batch (a rank's share of a step that has nothing left for it, see `shard_plan`) becomes an idle one:
    a single token that carries no label and belongs to no example. The rank runs it, so that its collectives
    (the gradient sum, FSDP's all-gathers) meet the other ranks', and it adds nothing to the loss or the results.
    """
    if not batch:
        token = torch.full((1, 1), pad_id, dtype=torch.long)
        return Batch(token, torch.ones_like(token), torch.full_like(token, IGNORE_INDEX), [],
                     RealTokens.from_lengths([1], 1), torch.zeros(0, dtype=torch.long))
    shape = (len(batch), max(len(examples[i].input_ids) for i in batch))
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    for row, i in enumerate(batch):
        n = len(examples[i].input_ids)
        input_ids[row, :n] = torch.tensor(examples[i].input_ids)
        labels[row, :n] = torch.tensor(examples[i].labels)
        attention_mask[row, :n] = 1
    tokens = RealTokens.from_lengths([len(examples[i].input_ids) for i in batch], shape[1])
    return Batch(input_ids, attention_mask, labels, list(batch), tokens, labelled_positions(labels))


def iterate_batches(examples: Sequence[Example], plan: Plan, pad_id: int) -> Iterator[Batch]:
    """Collate the batches of a plan one at a time."""
    for batch in plan:
        yield collate(examples, batch, pad_id)


def batch_predictions(
    batch: Batch, predicted: torch.Tensor, examples: Sequence[Example]
) -> list[tuple[int, list]]:
    """(example index, predictions at its Example.positions) for each example of the batch.

    `predicted` is (B, T), e.g. logits.argmax(-1), or (B, T, L), e.g. label log-probabilities (each prediction is then
    a list of L floats); align.predictions_per_word maps the results back to words.
    """
    rows, cols, counts = [], [], []
    for row, i in enumerate(batch.examples):
        positions = examples[i].positions
        rows.extend([row] * len(positions))
        cols.extend(positions)
        counts.append(len(positions))
    device = predicted.device
    index = (torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(cols, dtype=torch.long, device=device))
    values = predicted[index].tolist()
    out, at = [], 0
    for i, n in zip(batch.examples, counts):
        out.append((i, values[at : at + n]))
        at += n
    return out

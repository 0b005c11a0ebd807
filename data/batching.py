"""Batches of Examples: length-bucketed padding or packing; seeded, deterministic, shardable.

Batching happens in two steps. A *plan* says which examples go where: a list of batches, a
batch a list of rows, a row a list of example indices (one per row when padding, several when
packing). Plans are cheap, so coverage and sharding are decided on them; `collate` then turns
one batch of a plan into tensors. Every example is in exactly one row of a plan.

The model reads `attention_mask` as segment ids: a token attends only to keys with the same
non-zero id (and causally). Padded rows hold one segment (mask 1, pads 0); packed rows hold
segments 1, 2, 3, ... whose position ids restart at 0, so each example sees exactly what it
would see alone in a row.
"""

from bisect import bisect_left, insort
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from data.align import Example
from data.labels import IGNORE_INDEX

Plan = list[list[list[int]]]  # batches -> rows -> example indices


@dataclass(frozen=True)
class Placement:
    example: int  # index into the examples list
    row: int  # row of the batch holding it
    start: int  # offset of its first token in that row


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long, pad_id on padding
    attention_mask: torch.Tensor  # (B, T) long, segment id per token (1, 2, ... per row), 0 on padding
    labels: torch.Tensor  # (B, T) long, IGNORE_INDEX on padding and unlabelled tokens
    position_ids: torch.Tensor  # (B, T) long, 0, 1, ... within each segment, 0 on padding
    placements: list[Placement]  # where each example of the batch sits, to map predictions back

    def to(self, device: torch.device | str) -> "Batch":
        tensors = (self.input_ids, self.attention_mask, self.labels, self.position_ids)
        return Batch(*(t.to(device, non_blocking=True) for t in tensors), self.placements)


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
        batch: list[list[int]] = []
        for i in chunk:  # longest first, so batch[0] sets the padded length
            if batch_size is not None:
                full = len(batch) == batch_size
            else:
                full = bool(batch) and (len(batch) + 1) * lengths[batch[0][0]] > max_tokens
            if full:
                plan.append(batch)
                batch = []
            batch.append([i])
        if batch:
            plan.append(batch)
    if shuffle:
        plan = [plan[k] for k in rng.permutation(len(plan))]
    return plan


def packed_plan(
    lengths: Sequence[int], *, row_len: int, rows_per_batch: int, seed: int = 0, epoch: int = 0, shuffle: bool = True
) -> Plan:
    """Several examples per row, up to `row_len` tokens; `rows_per_batch` rows per batch.

    Each example (in shuffled order, or longest first when shuffle=False) goes to the row whose
    free space fits it most tightly (best fit), or opens a new row. Rows are then shuffled.
    """
    if row_len < 1 or rows_per_batch < 1:
        raise ValueError(f"row_len and rows_per_batch must be positive, got {row_len}, {rows_per_batch}")
    rng = np.random.default_rng([seed, epoch])
    if shuffle:
        order = rng.permutation(len(lengths)).tolist()
    else:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row index), sorted, for rows with space left
    for i in order:
        n = lengths[i]
        if n > row_len:
            raise ValueError(f"example {i} has {n} tokens, more than row_len={row_len}")
        k = bisect_left(free, (n, -1))  # the tightest row with at least n free tokens
        if k < len(free):
            space, r = free.pop(k)
        else:
            space, r = row_len, len(rows)
            rows.append([])
        rows[r].append(i)
        if space - n > 0:
            insort(free, (space - n, r))
    if shuffle:
        rows = [rows[k] for k in rng.permutation(len(rows))]
    return [rows[i : i + rows_per_batch] for i in range(0, len(rows), rows_per_batch)]


def shard_plan(plan: Plan, rank: int, world_size: int) -> Plan:
    """The batches of `rank`: every world_size-th batch, after splitting the batches with the
    most rows in two until all ranks get the same number of steps (no example repeated or dropped).
    Every rank must call this on the same plan (same seed and epoch)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    plan = list(plan)
    while len(plan) % world_size:
        k = max(range(len(plan)), key=lambda b: len(plan[b]))  # first batch with the most rows
        if len(plan[k]) < 2:
            raise ValueError(f"{len(plan)} single-row batches cannot be split evenly across {world_size} ranks")
        half = len(plan[k]) // 2
        plan[k : k + 1] = [plan[k][:half], plan[k][half:]]
    return plan[rank::world_size]


def collate(examples: Sequence[Example], rows: Sequence[Sequence[int]], pad_id: int) -> Batch:
    """Tensors for one batch of a plan, right-padded to its longest row."""
    row_lengths = [sum(len(examples[i].input_ids) for i in row) for row in rows]
    shape = (len(rows), max(row_lengths))
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    placements = []
    for r, row in enumerate(rows):
        start = 0
        for segment, i in enumerate(row, start=1):
            example = examples[i]
            end = start + len(example.input_ids)
            input_ids[r, start:end] = torch.tensor(example.input_ids)
            labels[r, start:end] = torch.tensor(example.labels)
            attention_mask[r, start:end] = segment
            position_ids[r, start:end] = torch.arange(end - start)
            placements.append(Placement(i, r, start))
            start = end
    return Batch(input_ids, attention_mask, labels, position_ids, placements)


def iterate_batches(examples: Sequence[Example], plan: Plan, pad_id: int) -> Iterator[Batch]:
    """Collate the batches of a plan one at a time."""
    for rows in plan:
        yield collate(examples, rows, pad_id)


def batch_predictions(
    batch: Batch, predicted: torch.Tensor, examples: Sequence[Example]
) -> list[tuple[int, list]]:
    """(example index, predictions at its Example.positions) for each example of the batch.

    `predicted` is (B, T), e.g. logits.argmax(-1), or (B, T, L), e.g. label log-probabilities (each prediction is then
    a list of L floats); align.predictions_per_word maps the results back to words.
    """
    rows, cols, counts = [], [], []
    for p in batch.placements:
        positions = examples[p.example].positions
        rows.extend([p.row] * len(positions))
        cols.extend(p.start + q for q in positions)
        counts.append(len(positions))
    device = predicted.device
    values = predicted[torch.tensor(rows, device=device), torch.tensor(cols, device=device)].tolist()
    out, at = [], 0
    for p, n in zip(batch.placements, counts):
        out.append((p.example, values[at : at + n]))
        at += n
    return out

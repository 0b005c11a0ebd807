"""data/batching.py: plans cover every example once, tensors are padded right, predictions map back."""

import math
import random
from collections import Counter

import pytest
import torch

from data.align import Example
from data.batching import batch_predictions, bucketed_plan, collate, iterate_batches, shard_plan
from model.tagger import IGNORE_INDEX

PAD = 128004
BOS = 128000


def make_examples(n: int, seed: int = 0, max_len: int = 60) -> list[Example]:
    """Examples shaped like align's: BOS, word tokens, a label on some first subtokens."""
    rng = random.Random(seed)
    examples = []
    for k in range(n):
        length = rng.randint(2, max_len)
        input_ids = [BOS] + [rng.randrange(1000, 2000) for _ in range(length - 1)]
        positions = sorted(rng.sample(range(1, length), rng.randint(1, length - 1)))
        labels = [IGNORE_INDEX] * length
        for p in positions:
            labels[p] = rng.randrange(9)
        examples.append(Example(input_ids, labels, positions, [(k, w) for w in range(len(positions))]))
    return examples


def flatten(plan) -> list[int]:
    return [i for batch in plan for i in batch]


@pytest.fixture(scope="module")
def examples():
    return make_examples(500)


@pytest.fixture(scope="module")
def lengths(examples):
    return [len(e.input_ids) for e in examples]


def test_bucketed_by_count_covers_each_example_once(lengths):
    plan = bucketed_plan(lengths, batch_size=16, seed=1, chunk_size=128)
    assert sorted(flatten(plan)) == list(range(len(lengths)))
    assert all(1 <= len(batch) <= 16 for batch in plan)
    assert sum(len(batch) < 16 for batch in plan) <= math.ceil(len(lengths) / 128)  # only chunk tails are short
    # Rows of a batch come from one length-sorted chunk: longest first, little padding.
    for batch in plan:
        batch_lengths = [lengths[i] for i in batch]
        assert batch_lengths == sorted(batch_lengths, reverse=True)
    padded = sum(len(batch) * lengths[batch[0]] for batch in plan)
    assert padded < 1.25 * sum(lengths)


def test_bucketed_by_token_budget(lengths):
    plan = bucketed_plan(lengths, max_tokens=400, seed=1)
    assert sorted(flatten(plan)) == list(range(len(lengths)))
    assert all(len(batch) * max(lengths[i] for i in batch) <= 400 for batch in plan)
    with pytest.raises(ValueError, match="example 1 has 401 tokens, more than max_tokens=400"):
        bucketed_plan([3, 401], max_tokens=400)
    for kwargs in (dict(), dict(batch_size=4, max_tokens=100), dict(batch_size=0)):
        with pytest.raises(ValueError):
            bucketed_plan(lengths, **kwargs)


def test_plans_are_seeded_and_deterministic(lengths):
    def make(**kw):
        return bucketed_plan(lengths, batch_size=8, **kw)

    assert make(seed=3, epoch=2) == make(seed=3, epoch=2)
    assert make(seed=3, epoch=2) != make(seed=3, epoch=3)
    assert make(seed=3, epoch=2) != make(seed=4, epoch=2)
    assert make(shuffle=False, seed=3) == make(shuffle=False, seed=4)


def test_evaluation_order_is_longest_first(lengths):
    plan = bucketed_plan(lengths, batch_size=8, shuffle=False)
    order = flatten(plan)
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)


def test_collate_padded_rows(examples):
    rows = [3, 7, 11]
    batch = collate(examples, rows, PAD)
    T = max(len(examples[i].input_ids) for i in (3, 7, 11))
    for tensor in (batch.input_ids, batch.attention_mask, batch.labels):
        assert tensor.shape == (3, T) and tensor.dtype == torch.long
    for r, i in enumerate(rows):
        n = len(examples[i].input_ids)
        assert batch.input_ids[r, :n].tolist() == examples[i].input_ids
        assert batch.input_ids[r, n:].eq(PAD).all()
        assert batch.attention_mask[r].tolist() == [1] * n + [0] * (T - n)
        assert batch.labels[r].tolist() == examples[i].labels + [IGNORE_INDEX] * (T - n)
    assert batch.examples == rows


def test_predictions_at_each_examples_positions():
    examples = [
        Example([BOS, 11, 12], [IGNORE_INDEX, 1, 2], [1, 2], [(0, 0), (0, 1)]),
        Example([BOS, 21], [IGNORE_INDEX, 5], [1], [(1, 0)]),
        Example([BOS, 31, 32, 33], [IGNORE_INDEX, 0, IGNORE_INDEX, 7], [1, 3], [(2, 0), (2, 1)]),
    ]
    batch = collate(examples, [2, 0, 1], PAD)
    assert batch.input_ids.tolist() == [[BOS, 31, 32, 33], [BOS, 11, 12, PAD], [BOS, 21, PAD, PAD]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch_predictions(batch, batch.labels, examples) == [(2, [0, 7]), (0, [1, 2]), (1, [5])]
    moved = batch.to("cpu")
    assert torch.equal(moved.input_ids, batch.input_ids) and moved.examples == batch.examples


def test_predictions_map_back_to_every_example_once(examples, lengths):
    plan = bucketed_plan(lengths, max_tokens=512, seed=5)
    predicted: dict[int, list[int]] = {}
    for batch in iterate_batches(examples, plan, PAD):
        for example, labels in batch_predictions(batch, batch.labels, examples):
            assert example not in predicted
            predicted[example] = labels
    assert predicted == {k: [e.labels[p] for p in e.positions] for k, e in enumerate(examples)}


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_shards_cover_every_example_once_with_equal_steps(lengths, world_size):
    plan = bucketed_plan(lengths, batch_size=5, seed=0)
    shards = [shard_plan(plan, rank, world_size) for rank in range(world_size)]
    assert len({len(shard) for shard in shards}) == 1
    seen = Counter(i for shard in shards for i in flatten(shard))
    assert sorted(seen) == list(range(len(lengths))) and set(seen.values()) == {1}
    if len(plan) % world_size == 0:
        assert shards[0] == plan[0::world_size]


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_single_example_batches_that_do_not_divide_leave_the_last_ranks_an_idle_step(world_size):
    plan = [[i] for i in range(7)]  # 7 windows, one per rank and step: nothing left to split
    shards = [shard_plan(plan, rank, world_size) for rank in range(world_size)]
    steps = -(-7 // world_size)  # ceil
    assert all(len(shard) == steps for shard in shards)
    assert sorted(i for shard in shards for batch in shard for i in batch) == list(range(7))
    idle = [(rank, k) for rank, shard in enumerate(shards) for k, batch in enumerate(shard) if not batch]
    assert idle == [(rank, steps - 1) for rank in range(world_size) if rank >= 7 % world_size]


def test_an_empty_batch_collates_to_one_unlabelled_token_of_no_example(examples):
    batch = collate(examples, [], PAD)
    assert batch.input_ids.tolist() == [[PAD]] and batch.attention_mask.tolist() == [[1]]
    assert batch.labels.tolist() == [[IGNORE_INDEX]] and batch.examples == []
    assert batch_predictions(batch, torch.zeros(1, 1, 9), examples) == []


def test_shard_errors():
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, 2\)"):
        shard_plan([[0], [1]], 2, 2)

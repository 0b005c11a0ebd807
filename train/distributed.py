"""Data-parallel fine-tuning on torch.distributed, for runs launched by torchrun (one process per device).

Every rank keeps a replica of the trainable tensors (LoRA A/B and the head), reads its own share of each
epoch's length buckets (`data.batching.shard_plan`), and after backward the trainable gradients are summed
over the ranks, so all replicas take the same optimizer step. With `--fsdp` the frozen base is sharded per
transformer block (FSDP2, Zhao et al. 2023) instead of replicated, for checkpoints that outgrow one device.

Why an explicit all-reduce rather than DistributedDataParallel: the loss of a step is divided by the number
of labelled tokens of the whole step on all ranks (so N ranks with a global batch of B sentences compute the
gradient one process computes on those B sentences), and such per-rank losses need their gradients *summed*,
where DDP averages. Only the few trainable tensors have gradients, so one flat all-reduce of them after backward
costs little even without DDP's overlap with backward; and the same code serves FSDP, which leaves those small
tensors replicated.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from data.align import Example
from data.batching import shard_plan
from data.conll import Sentence
from lora.inject import trainable_parameters
from predictor.predictor import Predictor, Tagged, WindowScores

# A rank that stops answering (hung, or its host gone) fails the others' next collective after this long
# instead of blocking them forever. A rank that exits is noticed by torchrun at once, which stops the rest.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a run; the defaults are a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the device index on this node

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, checkpoints, adapters and the progress bar."""
        return self.rank == 0


SINGLE_PROCESS = World()


def launched_world() -> World:
    """The World torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK; a single process when WORLD_SIZE <= 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; launch with torchrun")
    return World(int(os.environ["RANK"]), world_size, int(os.environ["LOCAL_RANK"]))


def rank_device(device: torch.device, world: World) -> torch.device:
    """Each rank of a node drives its own GPU: cuda:LOCAL_RANK."""
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the duration of a run: NCCL on GPUs, gloo on CPUs. Does nothing for a
    single process, or when the caller has joined a group already (and will leave it)."""
    if not world.distributed or dist.is_initialized():
        yield
        return
    cuda = device.type == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT, device_id=device if cuda else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def rank_batch_size(batch_size: int, grad_accum: int, world: World) -> int:
    """Sentences per step on each rank, so that the ranks together take `batch_size` per optimizer step."""
    if batch_size % (world.world_size * grad_accum):
        raise ValueError(f"batch_size={batch_size} must be a multiple of {world.world_size} ranks x "
                         f"grad_accum={grad_accum}: it is the global batch, split evenly across ranks")
    return batch_size // world.world_size


def rank_batch_tokens(batch_tokens: int, max_len: int, world: World) -> int:
    """Padded tokens per step on each rank, so that the ranks together take about `batch_tokens` per step."""
    if batch_tokens // world.world_size < max_len:
        raise ValueError(f"batch_tokens={batch_tokens} over {world.world_size} ranks leaves less than one window of "
                         f"max_len={max_len} per rank")
    return batch_tokens // world.world_size


def sum_over_ranks(values: torch.Tensor, world: World) -> torch.Tensor:
    """Element-wise sums over all ranks, in place, left on the device: nothing waits for the collective until a
    caller reads the result. Counts are exact in float64."""
    if world.distributed:
        dist.all_reduce(values)
    return values


def sum_gradients_over_ranks(params: list[nn.Parameter]) -> None:
    """Replace each gradient by its sum over all ranks, in one flat all-reduce rather than one per tensor."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numel,)
    dist.all_reduce(flat)
    for p, summed in zip(params, flat.split([p.numel() for p in params])):
        p.grad = summed.view_as(p)


def broadcast_trainable(model: nn.Module, world: World) -> None:
    """Give every rank rank 0's trainable tensors, so the replicas start (and hence stay) equal."""
    if world.distributed:
        with torch.no_grad():
            for p in trainable_parameters(model).values():
                dist.broadcast(p.data, src=0)


def gather_objects(obj: Any, world: World) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (pickled; for small things like RNG states)."""
    if not world.distributed:
        return [obj]
    gathered: list[Any] = [None] * world.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def shard_frozen_base(tagger: nn.Module, device: torch.device, world: World) -> None:
    """FSDP2 over the tagger's backbone: one unit per transformer block plus one for the embedding and final
    norm, so a rank holds 1/N of the frozen base and all-gathers one block at a time. The trainable LoRA and
    head tensors are left out of FSDP (replicated, summed by `sum_gradients_over_ranks`) and moved to `device`.

    The tagger may be built on the CPU; FSDP moves each shard to `device`. On GPUs the base is stored in bf16
    (`build_tagger`), so blocks are gathered in bf16 and run under bf16 autocast: FSDP's mixed precision
    policy would only cast what is already cast.
    """
    from torch.distributed.device_mesh import init_device_mesh  # imported here: FSDP takes a second to import
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world.world_size,))
    trainable = set(trainable_parameters(tagger).values())
    backbone = tagger.backbone
    for block in backbone.layers:  # model.llama.Block
        fully_shard(block, mesh=mesh, ignored_params=trainable)
    # The backbone, not the tagger, is FSDP's root: Tagger.loss calls the backbone without Tagger.forward.
    fully_shard(backbone, mesh=mesh, ignored_params=trainable)
    with torch.no_grad():
        for p in trainable:
            p.data = p.data.to(device)


def reshard_after_evaluation(tagger: nn.Module) -> None:
    """For --fsdp: FSDP keeps its root unit gathered after a forward that has no backward. Free it on every rank:
    `state_dict()` frees it too, and rank 0 alone calls that (saving the adapter), which would leave the ranks
    disagreeing about the next all-gather."""
    tagger.backbone.reshard()


def tag_on_ranks(predictor: Predictor, sentences: list[Sentence], examples: list[Example], world: World,
                 progress: str | None = None) -> Tagged:
    """Tag and score as `predictor.tag` does, each rank its share of the batches, every rank the whole result.
    `progress` names a progress bar, shown by rank 0 alone."""
    share = shard_plan(predictor.plan(examples), world.rank, world.world_size)
    scores = predictor.score_windows(examples, share, progress if world.is_main else None)
    if world.distributed:
        scores = WindowScores.joined(gather_objects(scores, world))
    return predictor.tags(sentences, examples, scores)

"""The fine-tuning loop: bucketed batches, clipped AdamW steps on a warmup-cosine schedule, evaluation on the
validation split with conlleval's entity F1, the best adapter kept, early stopping, and resumable checkpoints.

Launched by torchrun, every rank runs this loop on its share of the batches (train/distributed.py): the ranks
sum their gradients, share the evaluation, and rank 0 alone writes the run directory and shows progress."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from data.align import build_examples
from data.batching import Batch, Plan, bucketed_plan, collate, shard_plan
from data.conll import read_conll
from data.download import resolve_data_dir
from data.labels import IGNORE_INDEX, LABELS
from lora.inject import count_parameters
from model import load_tokenizer
from train.checkpoint import load_checkpoint, rng_state, save_checkpoint
from train.config import TrainConfig
from train.distributed import (SINGLE_PROCESS, World, broadcast_trainable, gather_objects, launched_world,
                               process_group, rank_batch_size, rank_device, reshard_after_evaluation,
                               shard_frozen_base, sum_gradients_over_ranks, sum_over_ranks)
from train.evaluate import autocast, tag_and_score
from train.optim import AdamW
from train.plot import plot_run
from train.run import RUN_FILE, build_tagger, code_version, resolve_device, save_tuned, use_bf16, write_run_info
from train.schedule import WarmupCosine

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"


def log_record(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(run_dir: Path, step: int) -> None:
    """On resume, drop records written after the checkpoint so the log reads as one uninterrupted run."""
    path = run_dir / METRICS_FILE
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def check_resumable(run_dir: Path, config: TrainConfig) -> bool:
    """True when run_dir holds a checkpoint of the same settings; an error when it holds another run's."""
    info_path = run_dir / RUN_FILE
    if not info_path.exists():
        return False
    # Read through TrainConfig, so settings added since the run was written compare as the behaviour the run had.
    # `out` is left out: it is run_dir itself, which may be spelled relative to another folder or absolute.
    saved = json.loads(json.dumps(TrainConfig.from_saved(json.loads(info_path.read_text())["config"]).to_json()))
    wanted = json.loads(json.dumps(config.to_json()))  # as it reads back from run.json: tuples become lists
    del saved["out"], wanted["out"]
    if saved != wanted:
        changed = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
        raise ValueError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); "
                         f"choose another --out or delete it")
    return (run_dir / CHECKPOINT_FILE).exists()


def micro_batches(batch_rows: list[list[int]], parts: int) -> list[list[list[int]]]:
    size = math.ceil(len(batch_rows) / parts)
    return [batch_rows[i : i + size] for i in range(0, len(batch_rows), size)]


def train(config: TrainConfig, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Fine-tune per `config`; returns the best evaluation record. `on_step(step)` runs after each optimizer step.
    Under torchrun (WORLD_SIZE > 1) every rank calls this and joins the process group for the run."""
    world = launched_world()
    device = rank_device(resolve_device(config.device), world)
    if config.fsdp and not world.distributed:
        raise ValueError("--fsdp shards the model across processes; launch with torchrun --nproc_per_node N, N > 1")
    with process_group(world, device):
        return train_process(config, world, device, on_step)


def train_process(
    config: TrainConfig, world: World, device: torch.device, on_step: Callable[[int], None] | None
) -> dict[str, Any]:
    """The loop of one process: the whole of a single-process run, or one rank's part of a torchrun run."""
    torch.manual_seed(config.seed)
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = check_resumable(run_dir, config)
    bf16 = use_bf16(config, device)
    batch_size = rank_batch_size(config.batch_size, config.grad_accum, world)

    data_dir = resolve_data_dir(config.data)
    train_sentences = read_conll(data_dir / "train.txt")[: config.limit]
    valid_sentences = read_conll(data_dir / "valid.txt")
    tokenizer = load_tokenizer(config.model)
    train_examples = build_examples(train_sentences, tokenizer, config.max_len, **config.window_settings())
    valid_examples = build_examples(valid_sentences, tokenizer, config.max_len, **config.window_settings())
    # A fixed slice of the training set scored like validation: the gap between the two shows overfitting.
    seen_sentences = train_sentences[: config.train_eval_sentences]
    seen_examples = build_examples(seen_sentences, tokenizer, config.max_len, **config.window_settings())
    lengths = [len(e.input_ids) for e in train_examples]

    tagger = build_tagger(config, len(LABELS), device, load_on=torch.device("cpu") if config.fsdp else device)
    if config.fsdp:
        shard_frozen_base(tagger, device, world)
    broadcast_trainable(tagger, world)
    if world.distributed:
        torch.manual_seed(config.seed + world.rank)  # replicas start equal, but draw their own dropout masks
    if world.is_main:
        print(count_parameters(tagger))
    optimizer = AdamW([p for p in tagger.parameters() if p.requires_grad], lr=config.lr,
                      weight_decay=config.weight_decay)

    def epoch_plan(epoch: int) -> Plan:
        """This rank's batches of an epoch: every rank the same number, every example on one rank once."""
        plan = bucketed_plan(lengths, batch_size=batch_size, seed=config.seed, epoch=epoch)
        return shard_plan(plan, world.rank, world.world_size)

    steps_per_epoch = len(epoch_plan(0))
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    scheduler = WarmupCosine(optimizer, total_steps, warmup_steps=int(config.warmup_ratio * total_steps),
                             min_lr_ratio=config.min_lr_ratio)

    progress = {"step": 0, "epoch": 0, "batch": 0, "best": None, "evals_without_gain": 0}
    if resume:
        progress = load_checkpoint(run_dir / CHECKPOINT_FILE, tagger, optimizer, scheduler, world.rank,
                                   world.world_size)
        if world.is_main:
            truncate_log(run_dir, progress["step"])
            print(f"resuming {run_dir} at step {progress['step']} of {total_steps}")
            started_with, now = json.loads((run_dir / RUN_FILE).read_text()).get("code"), code_version()
            if started_with != now:
                print(f"note: the run was started with code {started_with}, it resumes with {now}")
    elif world.is_main:
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
        write_run_info(run_dir, config, list(LABELS))

    def run_evaluation() -> bool:
        """Evaluate on validation, keep the adapter if it is the best so far; True when training should stop."""
        started = time.perf_counter()
        result = tag_and_score(tagger, tokenizer, config, valid_sentences, device, bf16, valid_examples, world)
        seen = None
        if seen_sentences:
            seen = tag_and_score(tagger, tokenizer, config, seen_sentences, device, bf16, seen_examples, world)
        if config.fsdp:
            reshard_after_evaluation(tagger)
        record = {"type": "eval", "step": progress["step"], "epoch": progress["epoch"],
                  "valid_loss": result.loss, "valid_f1": result.scores.f1,
                  "valid_precision": result.scores.precision, "valid_recall": result.scores.recall,
                  "per_type_f1": {k: v.f1 for k, v in result.scores.per_type.items()},
                  "valid_f1_by_decoder": result.f1_by_decoder}
        if seen is not None:
            record.update(train_loss=seen.loss, train_f1=seen.scores.f1)
        record["seconds"] = time.perf_counter() - started
        improved = progress["best"] is None or record["valid_f1"] > progress["best"]["valid_f1"]
        if improved:
            progress["best"], progress["evals_without_gain"] = record, 0
        else:
            progress["evals_without_gain"] += 1
        if world.is_main:
            log_record(run_dir, record)
            if improved:
                save_tuned(tagger, run_dir, config)
            on_train = f", train F1 {record['train_f1']:.2f}" if seen is not None else ""
            tqdm.write(f"step {record['step']}: valid F1 {record['valid_f1']:.2f} loss {record['valid_loss']:.4f}"
                       f"{on_train} "
                       f"(best {progress['best']['valid_f1']:.2f} at step {progress['best']['step']})")
        return config.patience is not None and progress["evals_without_gain"] >= config.patience

    tagger.train()
    bar = tqdm(total=total_steps, initial=progress["step"], desc="train", unit="step", dynamic_ncols=True,
               disable=not world.is_main)
    window_tokens, window_start = 0, time.perf_counter()
    while not progress.get("finished"):
        plan = epoch_plan(progress["epoch"])
        for rows in plan[progress["batch"] :]:
            batches = [collate(train_examples, part, tokenizer.pad_id).to(device)
                       for part in micro_batches(rows, config.grad_accum)]
            loss, tokens = train_step(tagger, batches, device, bf16, world)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                [p for p in tagger.parameters() if p.requires_grad], config.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.current_lrs()[0]
            scheduler.step()
            progress["step"] += 1
            progress["batch"] += 1
            window_tokens += tokens
            elapsed = time.perf_counter() - window_start
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{window_tokens / elapsed:.0f}", lr=f"{lr:.2e}")
            if world.is_main and (progress["step"] % 10 == 0 or progress["step"] == 1):  # 1: before any update
                log_record(run_dir, {"type": "train", "step": progress["step"], "epoch": progress["epoch"],
                                     "loss": loss, "lr": lr, "grad_norm": float(grad_norm),
                                     "tokens_per_s": window_tokens / elapsed})
                window_tokens, window_start = 0, time.perf_counter()
            end_of_epoch = progress["batch"] == len(plan)
            if end_of_epoch:
                progress["epoch"], progress["batch"] = progress["epoch"] + 1, 0
            done = progress["step"] >= total_steps
            if config.eval_every:
                eval_due = progress["step"] % config.eval_every == 0 or done
            else:
                eval_due = end_of_epoch or done
            if eval_due:
                early_stop = run_evaluation()
                progress["finished"] = done or early_stop
                tagger.train()
            if eval_due or progress["step"] % config.checkpoint_every == 0:
                rng_states = gather_objects(rng_state(), world)
                if world.is_main:
                    save_checkpoint(run_dir / CHECKPOINT_FILE, tagger, optimizer, scheduler, progress, rng_states)
            if on_step is not None:
                on_step(progress["step"])
            if progress.get("finished") or end_of_epoch:
                break
    bar.close()
    best = progress["best"]
    if world.is_main:
        print(f"best validation F1 {best['valid_f1']:.2f} at step {best['step']}; its weights are in {run_dir}")
        print(f"training curves: {plot_run(run_dir)}")
    return best


def train_step(
    tagger, batches: list[Batch], device: torch.device, bf16: bool, world: World = SINGLE_PROCESS
) -> tuple[float, int]:
    """Forward and backward over the micro-batches of one optimizer step (this rank's share of it).

    The loss is the mean over every labelled token of the whole step, on all ranks, so accumulating
    micro-batches, or summing the gradients of ranks, gives the same gradient as one large batch. Returns that
    loss and the number of real (non-pad) tokens processed, both over all ranks.
    """
    labelled = sum(int((b.labels != IGNORE_INDEX).sum()) for b in batches)
    [labelled_total] = sum_over_ranks([labelled], world, device)
    loss_total, tokens = 0.0, 0
    for batch in batches:
        with autocast(device, bf16):
            loss = tagger.loss(batch.input_ids, batch.labels, batch.attention_mask, batch.position_ids,
                               reduction="sum") / labelled_total
        loss.backward()
        loss_total += loss.item()
        tokens += int((batch.attention_mask > 0).sum())
    if not world.distributed:
        return loss_total, tokens
    sum_gradients_over_ranks([p for p in tagger.parameters() if p.requires_grad])
    loss_total, tokens = sum_over_ranks([loss_total, tokens], world, device)
    return loss_total, int(tokens)

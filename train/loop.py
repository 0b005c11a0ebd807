"""The fine-tuning loop: bucketed batches, clipped AdamW steps on a warmup-cosine schedule, evaluation on the
validation split with conlleval's entity F1, the best adapter kept, early stopping, and resumable checkpoints."""

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
from data.batching import Batch, bucketed_plan, collate
from data.conll import read_conll
from data.download import resolve_data_dir
from data.labels import IGNORE_INDEX, LABELS
from lora.inject import count_parameters
from lora.io import save_adapter
from model import load_tokenizer
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.evaluate import autocast, tag_and_score
from train.optim import AdamW
from train.run import RUN_FILE, build_tagger, resolve_device, use_bf16, write_run_info
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
    saved = json.loads(info_path.read_text())["config"]
    wanted = json.loads(json.dumps(config.to_json()))  # as it reads back from run.json: tuples become lists
    if saved != wanted:
        changed = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
        raise ValueError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); "
                         f"choose another --out or delete it")
    return (run_dir / CHECKPOINT_FILE).exists()


def micro_batches(batch_rows: list[list[int]], parts: int) -> list[list[list[int]]]:
    size = math.ceil(len(batch_rows) / parts)
    return [batch_rows[i : i + size] for i in range(0, len(batch_rows), size)]


def train(config: TrainConfig, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Fine-tune per `config`; returns the best evaluation record. `on_step(step)` runs after each optimizer step."""
    torch.manual_seed(config.seed)
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = check_resumable(run_dir, config)
    device = resolve_device(config.device)
    bf16 = use_bf16(config, device)

    data_dir = resolve_data_dir(config.data)
    train_sentences = read_conll(data_dir / "train.txt")[: config.limit]
    valid_sentences = read_conll(data_dir / "valid.txt")
    tokenizer = load_tokenizer(config.model)
    window = dict(add_bos=config.add_bos, context=config.context)
    train_examples = build_examples(train_sentences, tokenizer, config.max_len, **window)
    valid_examples = build_examples(valid_sentences, tokenizer, config.max_len, **window)
    lengths = [len(e.input_ids) for e in train_examples]

    tagger = build_tagger(config, len(LABELS), device)
    print(count_parameters(tagger))
    optimizer = AdamW([p for p in tagger.parameters() if p.requires_grad], lr=config.lr,
                      weight_decay=config.weight_decay)
    steps_per_epoch = len(bucketed_plan(lengths, batch_size=config.batch_size, seed=config.seed))
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    scheduler = WarmupCosine(optimizer, total_steps, warmup_steps=int(config.warmup_ratio * total_steps),
                             min_lr_ratio=config.min_lr_ratio)

    progress = {"step": 0, "epoch": 0, "batch": 0, "best": None, "evals_without_gain": 0}
    if resume:
        progress = load_checkpoint(run_dir / CHECKPOINT_FILE, tagger, optimizer, scheduler)
        truncate_log(run_dir, progress["step"])
        print(f"resuming {run_dir} at step {progress['step']} of {total_steps}")
    else:
        (run_dir / METRICS_FILE).unlink(missing_ok=True)
        write_run_info(run_dir, config, list(LABELS))

    def run_evaluation() -> bool:
        """Evaluate on validation, keep the adapter if it is the best so far; True when training should stop."""
        started = time.perf_counter()
        result = tag_and_score(tagger, tokenizer, config, valid_sentences, device, bf16, valid_examples)
        record = {"type": "eval", "step": progress["step"], "epoch": progress["epoch"],
                  "valid_loss": result.loss, "valid_f1": result.scores.f1,
                  "valid_precision": result.scores.precision, "valid_recall": result.scores.recall,
                  "per_type_f1": {k: v.f1 for k, v in result.scores.per_type.items()},
                  "seconds": time.perf_counter() - started}
        log_record(run_dir, record)
        best = progress["best"]
        if best is None or record["valid_f1"] > best["valid_f1"]:
            progress["best"], progress["evals_without_gain"] = record, 0
            save_adapter(tagger, run_dir)
        else:
            progress["evals_without_gain"] += 1
        tqdm.write(f"step {record['step']}: valid F1 {record['valid_f1']:.2f} loss {record['valid_loss']:.4f} "
                   f"(best {progress['best']['valid_f1']:.2f} at step {progress['best']['step']})")
        return config.patience is not None and progress["evals_without_gain"] >= config.patience

    tagger.train()
    bar = tqdm(total=total_steps, initial=progress["step"], desc="train", unit="step", dynamic_ncols=True)
    window_tokens, window_start = 0, time.perf_counter()
    while not progress.get("finished"):
        plan = bucketed_plan(lengths, batch_size=config.batch_size, seed=config.seed, epoch=progress["epoch"])
        for rows in plan[progress["batch"] :]:
            batches = [collate(train_examples, part, tokenizer.pad_id).to(device)
                       for part in micro_batches(rows, config.grad_accum)]
            loss, tokens = train_step(tagger, batches, device, bf16)
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
            if progress["step"] % 10 == 0 or progress["step"] == 1:  # step 1: the loss before any update
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
                save_checkpoint(run_dir / CHECKPOINT_FILE, tagger, optimizer, scheduler, progress)
            if on_step is not None:
                on_step(progress["step"])
            if progress.get("finished") or end_of_epoch:
                break
    bar.close()
    best = progress["best"]
    print(f"best validation F1 {best['valid_f1']:.2f} at step {best['step']}; adapter in {run_dir}")
    return best


def train_step(tagger, batches: list[Batch], device: torch.device, bf16: bool) -> tuple[float, int]:
    """Forward and backward over the micro-batches of one optimizer step.

    The loss is the mean over every labelled token of the whole step, so accumulating micro-batches gives the
    same gradient as one large batch. Returns that loss and the number of real (non-pad) tokens processed.
    """
    labelled_total = sum(int((b.labels != IGNORE_INDEX).sum()) for b in batches)
    loss_total, tokens = 0.0, 0
    for batch in batches:
        with autocast(device, bf16):
            loss = tagger.loss(batch.input_ids, batch.labels, batch.attention_mask, batch.position_ids,
                               reduction="sum") / labelled_total
        loss.backward()
        loss_total += loss.item()
        tokens += int((batch.attention_mask > 0).sum())
    return loss_total, tokens

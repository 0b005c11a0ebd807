"""The fine-tuning loop: bucketed batches, clipped AdamW steps on a warmup-cosine schedule, evaluation on the
validation split with conlleval's entity F1, the best adapter kept, early stopping, and resumable checkpoints.

Validation is scored three ways (data/views.py): as documents, sentence by sentence, and sentence by sentence
without final punctuation. The mean of the three F1s (`valid_mean_f1`) picks the best adapter and drives early
stopping, so a tagger that only shines with document context is not preferred over one that works on its own.

Read it top down: `train` joins the process group, `set_up` builds what a run needs once, `start_or_resume` says
where it stands, and the loop in `train_process` takes steps (train/step.py), evaluates when due and checkpoints.

Launched by torchrun, every rank runs this loop on its share of the batches (train/distributed.py): the ranks
sum their gradients, share the evaluation, and rank 0 alone writes the run directory and shows progress."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from data.align import Example
from data.batching import Plan, bucketed_plan, collate, shard_plan
from data.conll import Sentence, read_conll
from data.download import resolve_data_dir
from data.labels import LabelSet
from data.views import VIEW_NAMES, VIEWS, once_per_view, some_without_final_punctuation, taken_out, views
from lora.inject import count_parameters, trainable_parameters
from model import load_tokenizer
from model.tagger import Tagger
from predictor.device import resolve_device
from predictor.predictor import Predictor, Tagged
from predictor.run_dir import read_tagging, save_tuned
from train.build import build_tagger
from train.checkpoint import load_checkpoint, rng_state, save_checkpoint
from train.config import TrainConfig
from train.curves import plot_run
from train.distributed import (World, broadcast_trainable, gather_objects, launched_world, process_group,
                               rank_batch_size, rank_batch_tokens, rank_device, reshard_after_evaluation,
                               shard_frozen_base, tag_on_ranks)
from train.optim import AdamW
from train.run_dir import (CHECKPOINT_FILE, CURVES_FILE, check_resumable, code_version, lock_run_dir, log_record,
                           read_run_info, truncate_log, write_run_info)
from train.schedule import WarmupCosine
from train.sources import run_sources
from train.step import forward_backward, micro_batches, update

LOG_EVERY = 10  # optimizer steps between training records in metrics.jsonl (and step 1, before any update)


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint, so a resumed run carries on from exactly here."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch: int = 0  # batches of the current epoch taken
    best: dict[str, Any] | None = None  # the full evaluation record with the best mean validation F1 so far
    evals_without_gain: int = 0
    finished: bool = False


@dataclass
class Scored:
    """Sentences that are evaluated again and again, with their windows built once."""

    sentences: list[Sentence]
    examples: list[Example]


@dataclass
class Place:
    """Where a run writes, and what it is trained from."""

    run_dir: Path
    sources: dict[str, str]  # the data and base weights (train/sources.py)
    resume: bool  # run_dir holds a checkpoint of these settings and sources


@dataclass
class Fitting:
    """What the steps take: the training windows, how many make a step, the optimizer and its schedule."""

    examples: list[Example]
    batch_size: int  # this rank's windows per step
    batch_tokens: int | None  # or this rank's padded tokens per step
    optimizer: AdamW
    scheduler: WarmupCosine


@dataclass
class Scoring:
    """What the evaluations score."""

    valid: dict[str, Scored]  # validation in each view of data/views.py
    seen: Scored  # a fixed slice of the training set, scored like validation: the gap shows overfitting
    valid_subset: dict[str, Scored]  # what the evaluations between full ones score (subset_eval_*)
    seen_subset: Scored


@dataclass
class Run:
    """What one process needs to train, built once by `set_up`: the predictor holds the tagger being trained, with
    the tokenizer, labels, tagging settings and device that evaluations (and later `tag/`) tag with."""

    config: TrainConfig
    world: World
    place: Place
    predictor: Predictor
    fitting: Fitting
    scoring: Scoring

    def epoch_plan(self, epoch: int) -> Plan:
        f = self.fitting
        return epoch_plan(f.examples, f.batch_size, f.batch_tokens, self.config.seed, epoch, self.world)


def epoch_plan(examples: list[Example], batch_size: int, batch_tokens: int | None, seed: int, epoch: int,
               world: World) -> Plan:
    """This rank's batches of an epoch (`batch_size` windows each, or `batch_tokens` padded tokens): every rank
    the same number, every window on one rank once."""
    size = dict(batch_size=batch_size) if batch_tokens is None else dict(max_tokens=batch_tokens)
    plan = bucketed_plan([len(e.input_ids) for e in examples], **size, seed=seed, epoch=epoch)
    return shard_plan(plan, world.rank, world.world_size)


def train(config: TrainConfig, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Fine-tune per `config`; returns the best evaluation record. `on_step(step)` runs after each optimizer step.
    Under torchrun (WORLD_SIZE > 1) every rank calls this and joins the process group for the run. The run
    directory is locked for the run (rank 0 writes it): a second training into it stops at once."""
    world = launched_world()
    device = rank_device(resolve_device(config.device), world)
    if config.fsdp and not world.distributed:
        raise ValueError("--fsdp shards the model across processes; launch with torchrun --nproc_per_node N, N > 1")
    with lock_run_dir(Path(config.out)) if world.is_main else nullcontext(), process_group(world, device):
        return train_process(config, world, device, on_step)


def set_up(config: TrainConfig, world: World, device: torch.device) -> Run:
    """Read the data, build the windows, the tagger, the optimizer and the schedule."""
    torch.manual_seed(config.seed)
    place = find_place(config)
    data_dir = resolve_data_dir(config.data)
    labels, train_sentences = read_training(config, data_dir / "train.txt", place.run_dir if place.resume else None)
    train_sentences = train_sentences[: config.limit]
    valid_sentences = read_conll(data_dir / "valid.txt", config.scheme, labels)
    predictor = Predictor(build_trained_tagger(config, len(labels), device, world), load_tokenizer(config.model),
                          labels, config.tagging(), device)

    def scored(sentences: list[Sentence]) -> Scored:
        return Scored(sentences, predictor.windows(sentences))

    def scored_views(sentences: list[Sentence]) -> dict[str, Scored]:
        return once_per_view(views(sentences), lambda _, view: scored(view))

    seen = train_sentences[: config.train_eval_sentences]
    subset = config.subset_eval_sentences
    train_examples = scored(train_sentences).examples
    if config.window == "both":
        sentences_alone = some_without_final_punctuation(taken_out(train_sentences), config.bare_share, config.seed)
        train_examples += scored(sentences_alone).examples
    scoring = Scoring(valid=scored_views(valid_sentences), seen=scored(seen),
                      valid_subset=scored_views(valid_sentences[:subset]), seen_subset=scored(seen[:subset]))
    return Run(config, world, place, predictor, fitting(config, world, predictor.tagger, train_examples), scoring)


def find_place(config: TrainConfig) -> Place:
    """The run directory, what the run trains from, and whether it resumes a checkpoint there."""
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    sources = run_sources(resolve_data_dir(config.data), config.model)
    return Place(run_dir, sources, check_resumable(run_dir, config, sources))


def build_trained_tagger(config: TrainConfig, num_labels: int, device: torch.device, world: World) -> Tagger:
    """The tagger of train/build.py, on this rank: FSDP shards its frozen base; the ranks start from equal weights."""
    tagger = build_tagger(config, num_labels, device, load_on=torch.device("cpu") if config.fsdp else device)
    if config.fsdp:
        shard_frozen_base(tagger, device, world)
    broadcast_trainable(tagger, world)
    if world.distributed:
        torch.manual_seed(config.seed + world.rank)  # replicas start equal, but draw their own dropout masks
    if world.is_main:
        print(count_parameters(tagger))
    return tagger


def fitting(config: TrainConfig, world: World, tagger: Tagger, examples: list[Example]) -> Fitting:
    """Steps of `batch_size` windows or `batch_tokens` padded tokens (this rank's share), AdamW over the trainable
    weights, and the schedule sized to the run's steps."""
    batch_size = rank_batch_size(config.batch_size, config.grad_accum, world)
    batch_tokens = None
    if config.batch_tokens is not None:
        batch_tokens = rank_batch_tokens(config.batch_tokens, config.max_len, world)
    steps_per_epoch = len(epoch_plan(examples, batch_size, batch_tokens, config.seed, 0, world))
    # A fraction of an epoch ends on the step that holds it; the tolerance because 1.1 * 10 is 11.000000000000002.
    total_steps = config.max_steps or math.ceil(config.epochs * steps_per_epoch - 1e-9)
    optimizer = AdamW(list(trainable_parameters(tagger).values()), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = WarmupCosine(optimizer, total_steps, warmup_steps=int(config.warmup_ratio * total_steps),
                             min_lr_ratio=config.min_lr_ratio)
    return Fitting(examples, batch_size, batch_tokens, optimizer, scheduler)


def read_training(config: TrainConfig, train_file: Path, resumed: Path | None) -> tuple[LabelSet, list[Sentence]]:
    """The run's label set and the training sentences. The set is the labels file when given (the file is read
    against it), else the types of the whole training file (even under --limit). A resumed run must find the label
    set it started with."""
    given = LabelSet.read(config.labels) if config.labels else None
    sentences = read_conll(train_file, config.scheme, given)
    if config.window != "sentence" and not any(s.doc_start for s in sentences):
        print(f"note: {train_file}: no -DOCSTART- line, so every sentence is a document of its own and its windows "
              "hold no context beyond it (CoNLL-2003 as released marks 946 training documents; put a -DOCSTART- "
              "line before each document of your own data)", file=sys.stderr)
    labels = given or LabelSet.from_sentences((s.tags for s in sentences), str(train_file))
    if resumed is not None and labels != (started := read_tagging(resumed)[1]):
        raise ValueError(f"{resumed} was started with the labels {started}, but the data now gives "
                         f"{labels}; train into a new --out")
    return labels, sentences


def start_or_resume(run: Run) -> Progress:
    """The progress of the last checkpoint when resuming; otherwise a fresh start with a new run.json (in a run
    directory that holds no results: `check_resumable`)."""
    place, fitting = run.place, run.fitting
    if not place.resume:
        if run.world.is_main:
            write_run_info(place.run_dir, run.config, run.predictor.labels, place.sources)
        return Progress()
    saved = load_checkpoint(place.run_dir / CHECKPOINT_FILE, run.predictor.tagger, fitting.optimizer,
                            fitting.scheduler, run.world.rank, run.world.world_size)
    progress = Progress(**saved)
    if run.world.is_main:
        truncate_log(place.run_dir, progress.step)
        print(f"resuming {place.run_dir} at step {progress.step} of {fitting.scheduler.total_steps}")
        started_with, now = read_run_info(place.run_dir)["code"], code_version()
        if started_with != now:
            print(f"note: the run was started with code {started_with}, it resumes with {now}")
    return progress


def train_process(
    config: TrainConfig, world: World, device: torch.device, on_step: Callable[[int], None] | None
) -> dict[str, Any]:
    """The loop of one process: the whole of a single-process run, or one rank's part of a torchrun run."""
    run = set_up(config, world, device)
    progress = start_or_resume(run)
    tagger, fitting = run.predictor.tagger, run.fitting
    total_steps = fitting.scheduler.total_steps
    trainable = list(trainable_parameters(tagger).values())
    tagger.train()
    bar = tqdm(total=total_steps, initial=progress.step, desc="train", unit="step", dynamic_ncols=True,
               disable=not world.is_main)
    rate = TokenRate()
    while not progress.finished:
        plan = run.epoch_plan(progress.epoch)
        for batch in plan[progress.batch :]:
            batches = [collate(fitting.examples, part, run.predictor.tokenizer.pad_id).to(device)
                       for part in micro_batches(batch, config.grad_accum)]
            loss, tokens = forward_backward(tagger, batches, device, run.predictor.bf16, world)
            grad_norm, lr = update(trainable, fitting.optimizer, fitting.scheduler, config.clip_grad_norm)
            progress.step, progress.batch = progress.step + 1, progress.batch + 1
            rate.add(tokens)
            bar.update(1)
            # Reading the loss waits for the device to finish the step: only at the steps that log it.
            if world.is_main and (progress.step % LOG_EVERY == 0 or progress.step == 1):
                loss, tokens_per_s = float(loss), rate.per_second()
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:.0f}", lr=f"{lr:.2e}")
                log_record(run.place.run_dir, {"type": "train", "step": progress.step, "epoch": progress.epoch,
                                         "loss": loss, "lr": lr, "grad_norm": float(grad_norm),
                                         "tokens_per_s": tokens_per_s})
                rate.restart()
            end_of_epoch = progress.batch == len(plan)
            if end_of_epoch:
                progress.epoch, progress.batch = progress.epoch + 1, 0
            evaluated = evaluate_when_due(run, progress, end_of_epoch, total_steps)
            if evaluated or progress.step % config.checkpoint_every == 0:
                checkpoint(run, progress)
            if on_step is not None:
                on_step(progress.step)
            if progress.finished or end_of_epoch:
                break
    bar.close()
    if world.is_main:
        best = progress.best
        print(f"best validation F1 {three_scores(best)} at step {best['step']}; its weights are in {run.place.run_dir}")
        print(f"training curves: {run.place.run_dir / CURVES_FILE}")  # drawn by the last evaluation
    return progress.best


def evaluate_when_due(run: Run, progress: Progress, end_of_epoch: bool, total_steps: int) -> bool:
    """A full evaluation at the end of each epoch (or every `eval_every` steps) and of the run, keeping the best;
    between them, one on the fixed subsets every `subset_eval_every` steps. True after a full evaluation."""
    config, scoring = run.config, run.scoring
    done = progress.step >= total_steps
    full_due = done or (progress.step % config.eval_every == 0 if config.eval_every else end_of_epoch)
    if full_due:
        record = evaluate(run, progress, scoring.valid, scoring.seen, "eval")
        progress.finished = keep_if_best(run, progress, record) or done
    elif config.subset_eval_every and progress.step % config.subset_eval_every == 0:
        evaluate(run, progress, scoring.valid_subset, scoring.seen_subset, "subset_eval")
    return full_due


def evaluate(run: Run, progress: Progress, valid: dict[str, Scored], seen: Scored, kind: str) -> dict[str, Any]:
    """Score every view of `valid`, and `seen`; log the record (kind "eval" or "subset_eval"), redraw the curves;
    return it. Every validation key names its view: `valid_documents_f1`, `valid_alone_loss`, ..."""
    started = time.perf_counter()

    def score(scored: Scored, name: str) -> Tagged:
        return tag_on_ranks(run.predictor, scored.sentences, scored.examples, run.world,
                            progress=f"{name} ({len(scored.sentences)} sentences)")

    by_view = once_per_view(valid, lambda view, scored: score(scored, f"valid, {view}"))
    on_seen = score(seen, "train sample") if seen.sentences else None
    if run.config.fsdp:
        reshard_after_evaluation(run.predictor.tagger)
    record = {"type": kind, "step": progress.step, "epoch": progress.epoch,
              "valid_sentences": len(valid["documents"].sentences)}
    for view, result in by_view.items():
        scores = result.scores
        record.update({f"valid_{view}_loss": result.loss, f"valid_{view}_f1": scores.f1,
                       f"valid_{view}_precision": scores.precision, f"valid_{view}_recall": scores.recall,
                       f"valid_{view}_per_type_f1": {k: v.f1 for k, v in scores.per_type.items()},
                       f"valid_{view}_f1_by_decoder": result.f1_by_decoder})
    record["valid_mean_f1"] = sum(r.scores.f1 for r in by_view.values()) / len(by_view)
    if on_seen is not None:
        record.update(train_loss=on_seen.loss, train_f1=on_seen.scores.f1)
    record["seconds"] = time.perf_counter() - started
    if run.world.is_main:
        log_record(run.place.run_dir, record)
        plot_run(run.place.run_dir)
        on_train = f", train F1 {record['train_f1']:.2f}" if on_seen is not None else ""
        what = "valid" if kind == "eval" else f"valid[:{record['valid_sentences']}]"
        tqdm.write(f"step {progress.step}: {what} F1 {three_scores(record)}, "
                   f"loss {record['valid_documents_loss']:.4f}{on_train}")
    return record


def three_scores(record: dict[str, Any]) -> str:
    f1s = ", ".join(f"{record[f'valid_{view}_f1']:.2f} {VIEW_NAMES[view]}" for view in VIEWS)
    return f"{f1s} (mean {record['valid_mean_f1']:.2f})"


def keep_if_best(run: Run, progress: Progress, record: dict[str, Any]) -> bool:
    """Keep the tuned weights when `record` beats the best mean validation F1 so far; True when training should
    stop (`patience` evaluations in a row without a gain)."""
    if progress.best is None or record["valid_mean_f1"] > progress.best["valid_mean_f1"]:
        progress.best, progress.evals_without_gain = record, 0
        if run.world.is_main:
            save_tuned(run.predictor.tagger, run.place.run_dir, run.config.finetune)
    else:
        progress.evals_without_gain += 1
    if run.world.is_main:
        tqdm.write(f"best mean valid F1 {progress.best['valid_mean_f1']:.2f} at step {progress.best['step']}")
    return run.config.patience is not None and progress.evals_without_gain >= run.config.patience


def checkpoint(run: Run, progress: Progress) -> None:
    """Save the resumable state; every rank contributes its random state, rank 0 writes."""
    rng_states = gather_objects(rng_state(), run.world)
    if run.world.is_main:
        save_checkpoint(run.place.run_dir / CHECKPOINT_FILE, run.predictor.tagger, run.fitting.optimizer,
                        run.fitting.scheduler, dataclasses.asdict(progress), rng_states)


class TokenRate:
    """Real tokens per second since the last restart: the rate the progress bar and the log show."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.tokens, self.start = 0, time.perf_counter()

    def add(self, tokens: torch.Tensor) -> None:
        """Count a step's tokens, a tensor that may still be on its way from the device (nothing waits for it)."""
        self.tokens = self.tokens + tokens

    def per_second(self) -> float:
        return float(self.tokens) / (time.perf_counter() - self.start)


"""The evaluation pass that training and tagging share: windows -> label scores per word -> tags -> scores.

Training calls it on the validation split at every evaluation; `tag/` calls it to tag and score a trained run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from tqdm import tqdm

from data.align import Example, build_examples, predictions_per_word
from data.batching import batch_predictions, bucketed_plan, iterate_batches, shard_plan
from data.conll import Sentence
from data.decode import DECODERS, decode_tags
from data.labels import LabelSet
from data.metrics import Scores, evaluate
from model.tagger import IGNORE_INDEX, Tagger
from train.config import TrainConfig
from train.distributed import SINGLE_PROCESS, World, gather_objects
from train.device import autocast

T, R = TypeVar("T"), TypeVar("R")


@torch.inference_mode()
def predict_examples(
    tagger: Tagger,
    examples: Sequence[Example],
    pad_id: int,
    device: torch.device,
    max_tokens: int,
    bf16: bool,
    world: World = SINGLE_PROCESS,
    progress: str | None = None,
) -> tuple[list[list[list[float]]], float, int]:
    """Label log-probabilities (a row of L) at every labelled position of every example, the summed loss where
    labels exist, and their count.

    Examples are batched longest first up to `max_tokens` padded tokens, so evaluation wastes little on padding.
    Under torchrun each rank predicts its share of the batches and every rank gets all the results. `progress`
    names a progress bar on stderr (rank 0 only); None shows none.
    """
    was_training = tagger.training
    tagger.eval()
    plan = bucketed_plan([len(e.input_ids) for e in examples], max_tokens=max_tokens, shuffle=False)
    shard = shard_plan(plan, world.rank, world.world_size)
    predicted: dict[int, list[int]] = {}
    loss_sum, labelled_count = 0.0, 0
    bar = tqdm(total=sum(len(examples[i].input_ids) for batch in shard for i in batch), desc=progress,
               unit="tok", unit_scale=True, leave=False, dynamic_ncols=True,
               disable=progress is None or not world.is_main)
    for batch in iterate_batches(examples, shard, pad_id):
        batch = batch.to(device)
        with autocast(device, bf16):
            logits = tagger(batch.input_ids, batch.attention_mask)  # (B, T, L)
        labelled = batch.labels != IGNORE_INDEX
        if labelled.any():
            loss_sum += F.cross_entropy(logits[labelled].float(), batch.labels[labelled], reduction="sum").item()
            labelled_count += int(labelled.sum())
        predicted.update(batch_predictions(batch, logits.float().log_softmax(-1), examples))
        bar.update(int(batch.attention_mask.sum()) if batch.examples else 0)
    bar.close()
    tagger.train(was_training)
    if world.distributed:
        shares = gather_objects((predicted, loss_sum, labelled_count), world)
        predicted = {index: labels for share, _, _ in shares for index, labels in share.items()}
        loss_sum, labelled_count = sum(s[1] for s in shares), sum(s[2] for s in shares)
    return [predicted[i] for i in range(len(examples))], loss_sum, labelled_count


def once_per_view(views: dict[str, T], work: Callable[[str, T], R]) -> dict[str, R]:
    """work(name, view) for every view, done once per distinct object: data.views.views gives two views that
    coincide (every sentence already alone) the very same list, and they are then scored once."""
    done: dict[int, R] = {}
    for name, view in views.items():
        if id(view) not in done:
            done[id(view)] = work(name, view)
    return {name: done[id(view)] for name, view in views.items()}


@dataclass
class Evaluation:
    tags: list[list[str]]  # predicted IOB2 tags per sentence, by the config's decoder
    log_probs: list[list[list[float]]]  # per sentence, per word: the label log-probabilities the tags come from
    scores: Scores | None  # None when the sentences carry no gold tags
    loss: float | None
    f1_by_decoder: dict[str, float] | None  # F1 of every decoder from the same scores: what each one buys


def tag_and_score(
    tagger: Tagger,
    tokenizer,
    config: TrainConfig,
    labels: LabelSet,
    sentences: Sequence[Sentence],
    device: torch.device,
    bf16: bool,
    examples: Sequence[Example] | None = None,
    world: World = SINGLE_PROCESS,
    progress: str | None = None,
) -> Evaluation:
    """Predict one tag per word of every sentence (windows for long ones) and score against gold tags if present.
    Under torchrun the ranks share the work and all get the whole result. `progress`: see `predict_examples`."""
    if examples is None:
        examples = build_examples(sentences, tokenizer, config.max_len, **config.window_settings(), labels=labels)
    predictions, loss_sum, count = predict_examples(
        tagger, examples, tokenizer.pad_id, device, config.eval_max_tokens, bf16, world, progress)
    per_word = predictions_per_word(examples, predictions, sentences)
    tags = [decode_tags(log_probs, config.decode, labels) for log_probs in per_word]
    if any(s.tags is None for s in sentences):
        return Evaluation(tags, per_word, None, None, None)
    gold = [s.tags for s in sentences]
    scores = {d: evaluate(gold, tags if d == config.decode else [decode_tags(lp, d, labels) for lp in per_word])
              for d in DECODERS}
    return Evaluation(tags, per_word, scores[config.decode], loss_sum / max(count, 1),
                      {d: s.f1 for d, s in scores.items()})

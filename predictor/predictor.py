"""The predictor that training and tagging share: sentences -> windows -> label scores per word -> tags -> scores.

Training scores its validation sentences through it at every evaluation; `tag/` is built on it. It holds what
tagging needs and nothing of training: the tagger, the tokenizer, the labels, the tagging settings, the device.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from data.align import Example, build_examples, predictions_per_word
from data.batching import Plan, batch_predictions, bucketed_plan, iterate_batches
from data.conll import Sentence
from data.decode import DECODERS, decode_tags
from data.labels import LabelSet
from data.metrics import Scores, evaluate
from model.tagger import Tagger, labelled_cross_entropy
from model.tokenizer import Tokenizer
from predictor.device import autocast, tagging_tokens, use_bf16
from predictor.settings import TaggingSettings


@dataclass
class WindowScores:
    """What a forward pass over some batches of windows gives."""

    log_probs: dict[int, list[list[float]]]  # example index -> a row of label log-probabilities per predicted word
    loss_sum: float  # cross-entropy summed over the labelled words (0 without gold tags)
    labelled: int  # how many words carried a label

    @staticmethod
    def joined(parts: Sequence[WindowScores]) -> WindowScores:
        """The scores of disjoint sets of batches (the shares of several processes) as one."""
        return WindowScores({i: rows for part in parts for i, rows in part.log_probs.items()},
                            sum(p.loss_sum for p in parts), sum(p.labelled for p in parts))


@dataclass
class Tagged:
    tags: list[list[str]]  # predicted IOB2 tags per sentence, by the settings' decoder
    log_probs: list[list[list[float]]]  # per sentence, per word: the label log-probabilities the tags come from
    scores: Scores | None  # None when the sentences carry no gold tags
    loss: float | None
    f1_by_decoder: dict[str, float] | None  # F1 of every decoder from the same scores: what each one buys


@dataclass
class Predictor:
    tagger: Tagger
    tokenizer: Tokenizer
    labels: LabelSet
    settings: TaggingSettings
    device: torch.device
    int8: bool = False  # the linear layers of the blocks run in int8 (tag/quantize.py)

    @functools.cached_property
    def bf16(self) -> bool:
        """Asked once: on a CPU the answer reads /proc/cpuinfo, and training and tagging ask at every batch."""
        return use_bf16(self.settings.precision, self.device)

    @property
    def max_tokens(self) -> int:
        """Padded tokens per forward pass: the run's setting, else what suits the device."""
        return self.settings.max_tokens or tagging_tokens(self.device)

    def windows(self, sentences: Sequence[Sentence]) -> list[Example]:
        """The model-sized windows of the sentences (data/align.py), labelled where they carry tags."""
        s = self.settings
        return build_examples(sentences, self.tokenizer, s.max_len, add_bos=s.add_bos, stride=s.stride,
                              document=s.document, labels=self.labels)

    def plan(self, examples: Sequence[Example]) -> Plan:
        """Batches of windows longest first, up to `max_tokens` padded tokens each: little is spent on padding."""
        return bucketed_plan([len(e.input_ids) for e in examples], max_tokens=self.max_tokens,
                             shuffle=False)

    @torch.inference_mode()
    def score_windows(self, examples: Sequence[Example], plan: Plan, progress: str | None = None) -> WindowScores:
        """Label log-probabilities at the predicted words of the windows the plan's batches hold. `progress` names a
        progress bar on stderr; None shows none."""
        was_training = self.tagger.training
        self.tagger.eval()
        scores = WindowScores({}, 0.0, 0)
        bar = tqdm(total=sum(len(examples[i].input_ids) for batch in plan for i in batch), desc=progress,
                   unit="tok", unit_scale=True, leave=False, dynamic_ncols=True, disable=progress is None)
        for batch in iterate_batches(examples, plan, self.tokenizer.pad_id):
            batch = batch.to(self.device)
            with autocast(self.device, self.bf16):
                logits = self.tagger(batch.input_ids, batch.attention_mask, batch.tokens)  # (B, T, L)
            if (labelled := batch.labelled.numel()) > 0:
                scores.loss_sum += labelled_cross_entropy(logits, batch.labels, reduction="sum").item()
                scores.labelled += labelled
            scores.log_probs.update(batch_predictions(batch, logits.float().log_softmax(-1), examples))
            bar.update(batch.tokens.count if batch.examples else 0)
        bar.close()
        self.tagger.train(was_training)
        return scores

    def tags(self, sentences: Sequence[Sentence], examples: Sequence[Example], scores: WindowScores) -> Tagged:
        """One tag per word of every sentence from the scores of all its windows, scored against gold tags if the
        sentences have them."""
        per_word = predictions_per_word(examples, [scores.log_probs.get(i) for i in range(len(examples))], sentences)
        decode = self.settings.decode
        tags = [decode_tags(log_probs, decode, self.labels) for log_probs in per_word]
        if any(s.tags is None for s in sentences):
            return Tagged(tags, per_word, None, None, None)
        gold = [s.tags for s in sentences]
        by_decoder = {d: evaluate(gold, tags if d == decode else [decode_tags(lp, d, self.labels) for lp in per_word])
                      for d in DECODERS}
        return Tagged(tags, per_word, by_decoder[decode], scores.loss_sum / max(scores.labelled, 1),
                      {d: s.f1 for d, s in by_decoder.items()})

    def tag(self, sentences: Sequence[Sentence], examples: Sequence[Example] | None = None,
            progress: str | None = None) -> Tagged:
        """Tag (and score, with gold tags) the sentences; `examples` are their windows when built already."""
        if examples is None:
            examples = self.windows(sentences)
        return self.tags(sentences, examples, self.score_windows(examples, self.plan(examples), progress))

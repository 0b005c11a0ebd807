"""Tag sentences with a tagger and score them as conlleval does.

    python -m train.evaluate --run RUN_DIR --data FILE [--out PRED_FILE]

prints precision / recall / F1 overall and per type, and writes `token gold pred` lines for the conlleval script.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data.align import Example, build_examples, predictions_per_word
from data.batching import batch_predictions, bucketed_plan, iterate_batches, shard_plan
from data.conll import Sentence, read_conll, write_conlleval
from data.decode import DECODERS, decode_tags
from data.labels import IGNORE_INDEX
from model.tagger import Tagger
from train.config import TrainConfig
from train.distributed import SINGLE_PROCESS, World, gather_objects
from train.metrics import Scores, conlleval_report, evaluate


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


@torch.inference_mode()
def predict_examples(
    tagger: Tagger,
    examples: Sequence[Example],
    pad_id: int,
    device: torch.device,
    max_tokens: int,
    bf16: bool,
    world: World = SINGLE_PROCESS,
) -> tuple[list[list[list[float]]], float, int]:
    """Label log-probabilities (a row of L) at every labelled position of every example, the summed loss where
    labels exist, and their count.

    Examples are batched longest first up to `max_tokens` padded tokens, so evaluation wastes little on padding.
    Under torchrun each rank predicts its share of the batches and every rank gets all the results.
    """
    was_training = tagger.training
    tagger.eval()
    plan = bucketed_plan([len(e.input_ids) for e in examples], max_tokens=max_tokens, shuffle=False)
    predicted: dict[int, list[int]] = {}
    loss_sum, labelled_count = 0.0, 0
    for batch in iterate_batches(examples, shard_plan(plan, world.rank, world.world_size), pad_id):
        batch = batch.to(device)
        with autocast(device, bf16):
            logits = tagger(batch.input_ids, batch.attention_mask, batch.position_ids)  # (B, T, L)
        labelled = batch.labels != IGNORE_INDEX
        if labelled.any():
            loss_sum += F.cross_entropy(logits[labelled].float(), batch.labels[labelled], reduction="sum").item()
            labelled_count += int(labelled.sum())
        predicted.update(batch_predictions(batch, logits.float().log_softmax(-1), examples))
    tagger.train(was_training)
    if world.distributed:
        shares = gather_objects((predicted, loss_sum, labelled_count), world)
        predicted = {index: labels for share, _, _ in shares for index, labels in share.items()}
        loss_sum, labelled_count = sum(s[1] for s in shares), sum(s[2] for s in shares)
    return [predicted[i] for i in range(len(examples))], loss_sum, labelled_count


@dataclass
class Evaluation:
    tags: list[list[str]]  # predicted IOB2 tags per sentence, by the config's decoder
    scores: Scores | None  # None when the sentences carry no gold tags
    loss: float | None
    f1_by_decoder: dict[str, float] | None  # F1 of every decoder from the same scores: what each one buys


def tag_and_score(
    tagger: Tagger,
    tokenizer,
    config: TrainConfig,
    sentences: Sequence[Sentence],
    device: torch.device,
    bf16: bool,
    examples: Sequence[Example] | None = None,
    world: World = SINGLE_PROCESS,
) -> Evaluation:
    """Predict one tag per word of every sentence (windows for long ones) and score against gold tags if present.
    Under torchrun the ranks share the work and all get the whole result."""
    if examples is None:
        examples = build_examples(sentences, tokenizer, config.max_len, **config.window_settings())
    predictions, loss_sum, count = predict_examples(
        tagger, examples, tokenizer.pad_id, device, config.eval_max_tokens, bf16, world)
    per_word = predictions_per_word(examples, predictions, sentences)
    tags = [decode_tags(log_probs, config.decode) for log_probs in per_word]
    if any(s.tags is None for s in sentences):
        return Evaluation(tags, None, None, None)
    gold = [s.tags for s in sentences]
    scores = {d: evaluate(gold, tags if d == config.decode else [decode_tags(lp, d) for lp in per_word])
              for d in DECODERS}
    return Evaluation(tags, scores[config.decode], loss_sum / max(count, 1), {d: s.f1 for d, s in scores.items()})


def main(argv: list[str] | None = None) -> int:
    from train.run import load_run, use_bf16

    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run directory written by `python -m train`")
    parser.add_argument("--data", required=True, help="CoNLL file with gold tags (IOB1 or IOB2)")
    parser.add_argument("--out", help="write `token gold pred` lines here (conlleval format)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", help="base checkpoint folder, if it moved since training")
    parser.add_argument("--decode", choices=DECODERS, help="how scores become tags (default: the run's setting)")
    args = parser.parse_args(argv)

    run = load_run(args.run, device=args.device, model=args.model)
    config = dataclasses.replace(run.config, decode=args.decode) if args.decode else run.config
    sentences = read_conll(args.data)
    if any(s.tags is None for s in sentences):
        print(f"error: {args.data} has no NER column to score against; use train.predict to tag it",
              file=sys.stderr)
        return 2
    result = tag_and_score(run.tagger, run.tokenizer, config, sentences, run.device, use_bf16(config, run.device))
    print(conlleval_report(result.scores))
    print("F1 by decoder: " + ", ".join(f"{d} {f1:.2f}" for d, f1 in result.f1_by_decoder.items()))
    if args.out:
        write_conlleval(args.out, sentences, result.tags)
        print(f"predictions written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

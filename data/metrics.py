"""Entity-level precision / recall / F1 computed the way CoNLL's `conlleval` script does.

A chunk (entity) is a maximal run of tokens found by conlleval's start/end rules on IOB tags
(`O`, `B-TYPE`, `I-TYPE`; the type is everything after the first "-"), which read IOB1 and IOB2 alike:

  * B-X always starts a chunk (so B-X after I-X splits two adjacent entities of the same type);
  * I-X starts a chunk after O, at the start of a sentence, or after a tag of another type;
  * I-X continues a chunk after B-X or I-X; a chunk ends before O, B-*, another type, or the sentence end.

A predicted chunk is correct when a gold chunk has the same first token, last token and type.
Scores are percentages, as conlleval prints them; token accuracy counts every token (O included)
whose full tag is right. Counts add up, so batches and ranks can be evaluated apart and summed.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from data.schemes import split_tag

Chunk = tuple[str, int, int]  # (type, first token, last token)


def chunks(tags: Sequence[str]) -> list[Chunk]:
    """The chunks of one sentence under conlleval's rules."""
    found: list[Chunk] = []
    start, kind = None, ""
    for i, tag in enumerate(tags):
        prefix, tag_kind = split_tag(tag, i)
        if prefix not in ("O", "B", "I"):
            raise ValueError(f"{tag!r} is not an IOB tag: convert BIOES tags first (data/schemes.py)")
        starts = prefix == "B" or (prefix == "I" and (start is None or tag_kind != kind))
        if start is not None and (prefix == "O" or starts):
            found.append((kind, start, i - 1))
            start = None
        if starts:
            start, kind = i, tag_kind
    if start is not None:
        found.append((kind, start, len(tags) - 1))
    return found


@dataclass(frozen=True)
class TypeScores:
    precision: float  # percent
    recall: float  # percent
    f1: float  # percent
    gold: int  # chunks in the gold tags
    predicted: int  # chunks in the predicted tags
    correct: int  # predicted chunks with the right span and type

    @classmethod
    def from_counts(cls, gold: int, predicted: int, correct: int) -> "TypeScores":
        precision = 100 * correct / predicted if predicted else 0.0
        recall = 100 * correct / gold if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return cls(precision, recall, f1, gold, predicted, correct)


@dataclass(frozen=True)
class Scores:
    precision: float  # percent, over all types
    recall: float
    f1: float
    accuracy: float  # percent of tokens whose tag is exactly right
    per_type: dict[str, TypeScores]  # sorted by type name
    counts: "ChunkCounts"


@dataclass
class ChunkCounts:
    """What conlleval counts; `+` merges counts from other batches or ranks (e.g. after
    torch.distributed.all_gather_object)."""

    gold: Counter[str] = field(default_factory=Counter)
    predicted: Counter[str] = field(default_factory=Counter)
    correct: Counter[str] = field(default_factory=Counter)
    correct_tags: int = 0
    tokens: int = 0

    def update(self, gold_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]]) -> None:
        """Add sentences: gold_tags[i] and predicted_tags[i] are the tags of sentence i."""
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"{len(gold_tags)} gold sentences but {len(predicted_tags)} predicted")
        for n, (gold, predicted) in enumerate(zip(gold_tags, predicted_tags)):
            if isinstance(gold, str) or isinstance(predicted, str):
                raise TypeError(f"sentence {n}: expected a sequence of tags, got a string")
            if len(gold) != len(predicted):
                raise ValueError(f"sentence {n}: {len(gold)} gold tags but {len(predicted)} predicted")
            try:
                gold_chunks, predicted_chunks = chunks(gold), chunks(predicted)
            except ValueError as e:
                raise ValueError(f"sentence {n}: {e}") from e
            self.gold.update(kind for kind, _, _ in gold_chunks)
            self.predicted.update(kind for kind, _, _ in predicted_chunks)
            self.correct.update(kind for kind, _, _ in set(gold_chunks) & set(predicted_chunks))
            self.correct_tags += sum(g == p for g, p in zip(gold, predicted))
            self.tokens += len(gold)

    def __add__(self, other: "ChunkCounts") -> "ChunkCounts":
        return ChunkCounts(self.gold + other.gold, self.predicted + other.predicted, self.correct + other.correct,
                           self.correct_tags + other.correct_tags, self.tokens + other.tokens)

    def scores(self) -> Scores:
        overall = TypeScores.from_counts(sum(self.gold.values()), sum(self.predicted.values()),
                                         sum(self.correct.values()))
        per_type = {kind: TypeScores.from_counts(self.gold[kind], self.predicted[kind], self.correct[kind])
                    for kind in sorted(self.gold.keys() | self.predicted.keys())}
        accuracy = 100 * self.correct_tags / self.tokens if self.tokens else 0.0
        snapshot = self + ChunkCounts()  # later updates to self must not change these scores
        return Scores(overall.precision, overall.recall, overall.f1, accuracy, per_type, snapshot)


def evaluate(gold_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]]) -> Scores:
    """Scores of predicted against gold tags, one list of tags per sentence."""
    counts = ChunkCounts()
    counts.update(gold_tags, predicted_tags)
    return counts.scores()


def conlleval_report(scores: Scores) -> str:
    """The report conlleval prints, line for line."""
    c = scores.counts
    gold, predicted, correct = sum(c.gold.values()), sum(c.predicted.values()), sum(c.correct.values())
    lines = [f"processed {c.tokens} tokens with {gold} phrases; found: {predicted} phrases; correct: {correct}."]
    if c.tokens:
        lines.append(f"accuracy: {scores.accuracy:6.2f}%; precision: {scores.precision:6.2f}%; "
                     f"recall: {scores.recall:6.2f}%; FB1: {scores.f1:6.2f}")
    for kind, s in scores.per_type.items():
        lines.append(f"{kind:>17}: precision: {s.precision:6.2f}%; recall: {s.recall:6.2f}%; "
                     f"FB1: {s.f1:6.2f}  {s.predicted}")
    return "\n".join(lines) + "\n"

"""From per-word label scores to one valid IOB2 tag sequence per sentence.

The head scores every word on its own, so the most likely label of each word can form an impossible sequence: an
I-X after O, or after B-Y of another type. Two ways to read such scores are offered:

- `argmax`: the most likely label of each word, then every I-X that does not continue an X entity becomes B-X
  (what conlleval would read anyway).
- `viterbi`: the most likely sequence among the valid IOB2 ones, by the Viterbi algorithm over the label
  log-probabilities with the transitions IOB2 forbids set to -inf (the constrained decoding of e.g. Lample et al.
  2016, without learned transition scores). It can settle a doubtful word either way: "O I-ORG I-ORG" may become
  "B-ORG I-ORG I-ORG" or "O B-ORG I-ORG", whichever the scores favour.

`labels` is always the run's label list (data/labels.py): row j of the scores belongs to labels[j].
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from data.schemes import to_iob2

DECODERS: tuple[str, ...] = ("viterbi", "argmax")


def iob2_transitions(labels: Sequence[str]) -> np.ndarray:
    """(L, L) bool, [previous, next]: False where IOB2 forbids the pair (I-X after anything but B-X or I-X)."""
    allowed = np.ones((len(labels), len(labels)), dtype=bool)
    for nxt, label in enumerate(labels):
        if label.startswith("I-"):
            allowed[:, nxt] = [prev[:2] in ("B-", "I-") and prev[2:] == label[2:] for prev in labels]
    return allowed


@lru_cache(maxsize=8)
def _transition_penalty(labels: tuple[str, ...]) -> np.ndarray:
    return np.where(iob2_transitions(labels), 0.0, -np.inf)


def viterbi_iob2(log_probs: np.ndarray, labels: Sequence[str]) -> list[int]:
    """Label ids of the most probable valid IOB2 sequence under per-word log-probabilities (n_words, L).

    A sentence starts as if after O, so it cannot open with I-X. Ties go to the lower label id.
    """
    n = len(log_probs)
    if n == 0:
        return []
    penalty = _transition_penalty(tuple(labels))  # (L_prev, L_next)
    score = log_probs[0] + penalty[labels.index("O")]  # best score of a path ending in each label
    back = np.zeros((n, len(labels)), dtype=np.int64)
    for i in range(1, n):
        candidates = score[:, None] + penalty  # (L_prev, L_next)
        back[i] = candidates.argmax(0)
        score = candidates.max(0) + log_probs[i]
    path = [int(score.argmax())]
    for i in range(n - 1, 0, -1):
        path.append(int(back[i, path[-1]]))
    return path[::-1]


def decode_tags(log_probs: Sequence[Sequence[float]], decoder: str, labels: Sequence[str]) -> list[str]:
    """IOB2 tags of one sentence from its words' label log-probabilities, by `decoder` (one of DECODERS)."""
    labels = tuple(labels)
    scores = np.asarray(log_probs, dtype=np.float64).reshape(len(log_probs), len(labels))
    if decoder == "viterbi":
        ids = viterbi_iob2(scores, labels)
    elif decoder == "argmax":
        ids = scores.argmax(-1).tolist()
    else:
        raise ValueError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
    return to_iob2([labels[i] for i in ids], "iob1")

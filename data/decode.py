"""From per-word label scores to one valid IOB2 tag sequence per sentence.

The head scores every word on its own, so the most likely label of each word can form an impossible sequence: an
I-X after O, or after B-Y of another type. Two ways to read such scores are offered:

- `argmax`: the most likely label of each word, then every I-X that does not continue an X entity becomes B-X
  (what conlleval would read anyway).
- `viterbi`: the most likely sequence among the valid IOB2 ones, by the Viterbi algorithm over the label
  log-probabilities with the transitions IOB2 forbids set to -inf (the constrained decoding of e.g. Lample et al.
  2016, without learned transition scores). It can settle a doubtful word either way: "O I-ORG I-ORG" may become
  "B-ORG I-ORG I-ORG" or "O B-ORG I-ORG", whichever the scores favour.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.labels import ID_TO_LABEL, LABEL_TO_ID, LABELS, iob1_to_iob2

DECODERS: tuple[str, ...] = ("viterbi", "argmax")


def iob2_transitions() -> np.ndarray:
    """(L, L) bool, [previous, next]: False where IOB2 forbids the pair (I-X after anything but B-X or I-X)."""
    allowed = np.ones((len(LABELS), len(LABELS)), dtype=bool)
    for nxt, label in enumerate(LABELS):
        if label.startswith("I-"):
            allowed[:, nxt] = [prev[2:] == label[2:] for prev in LABELS]
    return allowed


_TRANSITION_PENALTY = np.where(iob2_transitions(), 0.0, -np.inf)


def viterbi_iob2(log_probs: np.ndarray) -> list[int]:
    """Label ids of the most probable valid IOB2 sequence under per-word log-probabilities (n_words, L).

    A sentence starts as if after O, so it cannot open with I-X. Ties go to the lower label id.
    """
    n = len(log_probs)
    if n == 0:
        return []
    penalty = _TRANSITION_PENALTY  # (L_prev, L_next)
    score = log_probs[0] + penalty[LABEL_TO_ID["O"]]  # best score of a path ending in each label
    back = np.zeros((n, len(LABELS)), dtype=np.int64)
    for i in range(1, n):
        candidates = score[:, None] + penalty  # (L_prev, L_next)
        back[i] = candidates.argmax(0)
        score = candidates.max(0) + log_probs[i]
    path = [int(score.argmax())]
    for i in range(n - 1, 0, -1):
        path.append(int(back[i, path[-1]]))
    return path[::-1]


def decode_tags(log_probs: Sequence[Sequence[float]], decoder: str) -> list[str]:
    """IOB2 tags of one sentence from its words' label log-probabilities, by `decoder` (one of DECODERS)."""
    scores = np.asarray(log_probs, dtype=np.float64).reshape(len(log_probs), len(LABELS))
    if decoder == "viterbi":
        ids = viterbi_iob2(scores)
    elif decoder == "argmax":
        ids = scores.argmax(-1).tolist()
    else:
        raise ValueError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
    return iob1_to_iob2([ID_TO_LABEL[i] for i in ids])

"""A confidence score per predicted entity: its span marginal under the valid IOB2 sequences.

The head gives every word its own label distribution; Viterbi (data/decode.py) picks the best sequence among the
valid IOB2 ones. Renormalising the per-word probabilities over those valid sequences only,

    p(y) ∝ prod_i exp(log_probs[i, y_i])    for y allowed by `iob2_transitions` (starting as if after O),

the confidence of a predicted entity (type X, words first..last) is the probability under p that exactly this span
is an X entity: y_first = B-X, y_first+1..last = I-X, and y_last+1 is not I-X (or the sentence ends there). This is
the constrained "span marginal" of Culotta & McCallum 2004 ("Confidence estimation for information extraction"),
who ran forward-backward over a CRF lattice clamped to the extracted field; here the lattice has no learned
transitions, only IOB2's hard constraints.

Why not the mean of the span's token probabilities: it ignores the boundary. An entity whose next word is likely
I-X (so the true entity is probably longer) or whose first word might be I-X of a longer entity to its left gets
the same mean, while its span marginal drops by the mass of those alternatives. It is also a probability of the
whole event, so the scores of the spans of an entity starting at word i add up to P(y_i = B-X).

Forward-backward runs in log space, O(n L^2), with -inf for forbidden transitions, so long sentences and very
peaked rows (-1e4, -inf) neither underflow nor overflow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.decode import iob2_transitions


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(a))) along `axis`, stable for huge negatives, and -inf (not nan) where all entries are -inf."""
    top = a.max(axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - top).sum(axis=axis)) + np.squeeze(top, axis=axis)


def _penalty(labels: Sequence[str]) -> np.ndarray:
    """(L_prev, L_next) additive log-weights: 0 where IOB2 allows the pair, -inf where it forbids it."""
    return np.where(iob2_transitions(labels), 0.0, -np.inf)


def log_forward(log_probs: np.ndarray, penalty: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, float]:
    """Log alphas (n, L), alpha[i, j] = log of the mass of valid prefixes y_0..y_i with y_i = j, and log Z.

    `start` (L,) is the penalty row of the label a sentence starts after (O).
    """
    alpha = np.empty_like(log_probs)  # (n, L)
    alpha[0] = start + log_probs[0]
    for i in range(1, len(log_probs)):
        alpha[i] = _logsumexp(alpha[i - 1][:, None] + penalty, axis=0) + log_probs[i]
    return alpha, float(_logsumexp(alpha[-1], axis=0))


def log_backward(log_probs: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Log betas (n, L), beta[i, j] = log of the mass of valid suffixes y_i+1.. given y_i = j (word i not counted)."""
    beta = np.zeros_like(log_probs)  # (n, L)
    for i in range(len(log_probs) - 2, -1, -1):
        beta[i] = _logsumexp(penalty + (log_probs[i + 1] + beta[i + 1])[None, :], axis=1)
    return beta


def _span_ids(labels: Sequence[str], kind: str) -> tuple[int, int]:
    """Rows of B-kind and I-kind; a type the run does not know is an error, not a zero score."""
    if f"B-{kind}" not in labels or f"I-{kind}" not in labels:
        raise ValueError(f"entity type {kind!r} has no B-/I- labels in {list(labels)}")
    return labels.index(f"B-{kind}"), labels.index(f"I-{kind}")


def entity_scores(log_probs: np.ndarray, labels: Sequence[str],
                  spans: Sequence[tuple[str, int, int]]) -> list[float]:
    """Probability in [0, 1] of each span (type, first, last; inclusive words) being exactly an entity of its type.

    `log_probs` (n_words, L) are the words' label log-probabilities, row j for labels[j]; `spans` are as
    data/metrics.py `chunks()` returns them. Raises ValueError for an unknown type or an out-of-range span.
    """
    labels = list(labels)
    n = len(log_probs)
    scores = np.asarray(log_probs, dtype=np.float64).reshape(n, len(labels))  # (n, L)
    ids = [_span_ids(labels, kind) for kind, _, _ in spans]
    for kind, first, last in spans:
        if not 0 <= first <= last < n:
            raise ValueError(f"span {(kind, first, last)} out of range for a sentence of {n} words")
    if not spans:
        return []
    penalty = _penalty(labels)  # (L_prev, L_next)
    alpha, log_z = log_forward(scores, penalty, penalty[labels.index("O")])
    if not np.isfinite(log_z):
        raise ValueError("no valid IOB2 sequence has a nonzero probability under these log-probabilities")
    beta = log_backward(scores, penalty)
    out = []
    for (_, first, last), (b, inside) in zip(spans, ids):
        log_p = alpha[first, b] + scores[first + 1:last + 1, inside].sum()
        if last + 1 < n:
            after = penalty[b if first == last else inside] + scores[last + 1] + beta[last + 1]  # (L,)
            after[inside] = -np.inf  # the entity must end at `last`
            log_p += _logsumexp(after, axis=0)
        out.append(float(min(1.0, np.exp(log_p - log_z))))
    return out

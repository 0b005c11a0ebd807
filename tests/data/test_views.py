"""data/views.py: validation as documents, sentence by sentence, and without final punctuation."""

from data.conll import Sentence
from data.views import alone, some_without_final_punctuation, taken_out, views, without_final_punctuation


def test_alone_makes_every_sentence_its_own_document():
    doc = [Sentence(["a"], ["O"], doc_id=0, doc_start=True), Sentence(["b"], ["O"], doc_id=0, line=3)]
    assert [(s.words, s.doc_id, s.doc_start, s.line) for s in alone(doc)] == [
        (["a"], 0, False, 0), (["b"], 1, False, 3)]


def test_final_punctuation_goes_but_entities_and_one_word_stay():
    def bare(words, tags=None):
        s = without_final_punctuation(Sentence(words, tags))
        return s.words, s.tags

    assert bare(["Paris", "is", "nice", "."], ["B-LOC", "O", "O", "O"]) == (
        ["Paris", "is", "nice"], ["B-LOC", "O", "O"])
    assert bare(["he", "said", ".", '"']) == (["he", "said"], None)  # untagged, two trailing marks
    assert bare(["What", "?!", "..."]) == (["What"], None)
    assert bare(["1-0", "."]) == (["1-0"], None)  # a word with a digit is no punctuation
    assert bare(["Yahoo", "!"], ["B-ORG", "I-ORG"]) == (["Yahoo", "!"], ["B-ORG", "I-ORG"])  # inside an entity
    assert bare(["."], ["O"]) == (["."], ["O"])  # never empty
    assert bare(["«", "Hallo", "»"]) == (["«", "Hallo"], None)  # Unicode punctuation too


def test_views_share_a_list_when_sentences_already_stand_alone():
    posts = [Sentence(["hi", "."], ["O", "O"], doc_id=i) for i in range(3)]
    got = views(posts)
    assert got["alone"] is got["documents"] and [s.words for s in got["bare"]] == [["hi"]] * 3
    doc = [Sentence(["hi", "."], ["O", "O"], doc_id=0) for _ in range(3)]
    got = views(doc)
    assert got["alone"] is not got["documents"] and [s.doc_id for s in got["alone"]] == [0, 1, 2]


def test_taken_out_gives_the_sentences_of_longer_documents_alone():
    sentences = [Sentence(["a"], ["O"], doc_id=0), Sentence(["b"], ["O"], doc_id=0), Sentence(["c"], ["O"], doc_id=1),
                 Sentence(["d"], ["B-X"], doc_id=2), Sentence(["e"], ["O"], doc_id=2), Sentence(["f"], ["O"], doc_id=2)]
    out = taken_out(sentences)
    assert [s.words for s in out] == [["a"], ["b"], ["d"], ["e"], ["f"]]  # c is a document by itself: already alone
    assert len({s.doc_id for s in out}) == 5 and out[2].tags == ["B-X"]


def test_some_without_final_punctuation_strips_the_drawn_share_and_keeps_the_rest():
    sentences = [Sentence([f"w{i}", "."], ["B-X", "O"], doc_id=i) for i in range(10)]
    assert some_without_final_punctuation(sentences, 0.0, seed=0) == sentences
    some = some_without_final_punctuation(sentences, 0.3, seed=0)
    assert [s.words[0] for s in some] == [f"w{i}" for i in range(10)]  # every sentence, in order
    assert sorted(len(s.words) for s in some) == [1] * 3 + [2] * 7 and all(s.tags[0] == "B-X" for s in some)
    assert some_without_final_punctuation(sentences, 0.3, seed=1) != some
    assert all(s.words == [s.words[0]] for s in some_without_final_punctuation(sentences, 1.0, seed=0))

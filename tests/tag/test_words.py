"""tag/words.py: raw text splits into words as CoNLL-2003 splits them, and no character is lost."""

from __future__ import annotations

import random

import pytest

from data.conll import read_conll
from tag.words import split_words
from tests.conll_data import CONLL, needs_conll


def words(text: str) -> list[str]:
    return [m.group() for m in split_words(text)]


@pytest.mark.parametrize("text, expected", [
    ("J. Smith of Acme Inc. met U.S. officials at 9 a.m.",
     ["J.", "Smith", "of", "Acme", "Inc.", "met", "U.S.", "officials", "at", "9", "a.m."]),
    ("Ford Motor Corp. vs. General Motors Co.", ["Ford", "Motor", "Corp.", "vs.", "General", "Motors", "Co."]),
    ("John's dog doesn't bark, they're O'Neill's.",
     ["John", "'s", "dog", "does", "n't", "bark", ",", "they", "'re", "O'Neill", "'s", "."]),
    ("1. Tiger Woods (U.S.) 66", ["1.", "Tiger", "Woods", "(", "U.S.", ")", "66"]),
    ("Sales rose 3.5% to C$ 1,000, on 1996-08-22 -- a U.S.-led deal at 5-1/2 ...",
     ["Sales", "rose", "3.5", "%", "to", "C$", "1,000", ",", "on", "1996-08-22", "--", "a", "U.S.-led", "deal",
      "at", "5-1/2", "..."]),
    ("He was born in 1996.", ["He", "was", "born", "in", "1996", "."]),  # a full stop after a number ends the text
    ("I saw plan B.", ["I", "saw", "plan", "B", "."]),  # an initial needs a name after it
])
def test_abbreviations_clitics_and_numbers_split_as_in_conll(text, expected):
    assert words(text) == expected


def test_no_character_is_lost_and_offsets_point_into_the_text():
    rng = random.Random(0)
    alphabet = "aZ9 .,'’-$+/:&()\"!?é中\t"
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        matches = split_words(text)
        assert all(text[m.start():m.end()] == m.group() for m in matches)
        assert "".join(m.group() for m in matches) == "".join(text.split())


@needs_conll
@pytest.mark.parametrize("split, at_least", [("train", 0.975), ("valid", 0.97)])
def test_conll_sentences_split_back_into_their_own_words(split, at_least):
    """The data is the oracle: a sentence's words joined by spaces split back into the same words (97.9 % of the
    training sentences and 97.4 % of the validation ones; 70.3 % and 68.4 % with the word split before)."""
    sentences = read_conll(CONLL / f"{split}.txt")
    same = sum(words(" ".join(s.words)) == s.words for s in sentences)
    assert same / len(sentences) >= at_least

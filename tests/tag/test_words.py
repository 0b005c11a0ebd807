"""tag/words.py: raw text splits into words as CoNLL-2003 splits them, and no character is lost. On the data the
oracle is exact: every token of a shape the module promises to keep is kept, and only declared disagreements are
not."""

from __future__ import annotations

import random
import re
from collections import Counter

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


# The shapes of CoNLL-2003 tokens that tag/words.py promises to keep as one word (its docstring), written here from
# the data's conventions, each in a text where the shape is one word; the first shape that matches a token is its.
SHAPES = {
    "number": (r"\+?\d+(?:,\d{3})*(?:[-.:/]\d+(?:,\d{3})*)*|\.\d+", "x {} y"),  # 1,000 3.5 5-1/2 1996-08-22 .500
    "word": (r"[A-Za-z0-9]+(?:[-&'][A-Za-z0-9]+)*", "x {} y"),  # Urdu-speaking AT&T O'Neill F-16
    "letters with full stops": (r"(?:[A-Za-z]\.){2,}(?:-[A-Za-z]+)*", "x {} y"),  # U.S. a.m. U.S.-led
    "initial": (r"[A-Z]\.", "x {} Smith"),  # before a name
    "ranking": (r"\d+\.", "{} Tiger Woods"),  # at the start of a text
    "abbreviation": (r"[A-Za-z]{2,}\.", "x {} y"),  # Inc. vs.
    "clitic": (r"n't|'[A-Za-z]{1,2}", "John {} y"),  # 's n't 're
    "run": (r"-{2,}|\.{2,}", "x {} y"),  # -- ...
    "currency": (r"[A-Z]{1,2}\$", "x {} 5"),  # C$ US$
    "sign": (r"[^\w\s]", "x {} y"),  # ( , % "
}
# Where tag/words.py knowingly splits otherwise than CoNLL-2003, per shape: exactly these tokens are split.
DECLARED = {
    "word": r"\d+-.*[A-Za-z].*",  # a number hyphenated to letters (10-year, 26-year-old): the number goes alone
    "abbreviation": r"[A-Z]+\.",  # an abbreviation in capitals (ST.): only the spellings of the data's text are kept
}


def shape(token: str) -> str | None:
    return next((name for name, (pattern, _) in SHAPES.items() if re.fullmatch(pattern, token)), None)


def declared(name: str, token: str) -> bool:
    return name in DECLARED and re.fullmatch(DECLARED[name], token) is not None


def conll_tokens() -> Counter[str]:
    return Counter(w for split in ("train", "valid") for s in read_conll(CONLL / f"{split}.txt") for w in s.words)


@needs_conll
def test_every_conll_token_of_a_promised_shape_is_one_word_in_its_context():
    """The data is the oracle: each distinct token of a shape above, in the text of its shape, comes back as the
    words of that text, except exactly the declared disagreements."""
    tokens = conll_tokens()
    for name, (pattern, context) in SHAPES.items():
        members = [t for t in tokens if shape(t) == name]
        split = {t for t in members if words(context.format(t)) != context.format(t).split()}
        assert split == {t for t in members if declared(name, t)}, name
    # Beyond the shapes: table rules, e-mail addresses, `**`, typos (U.S without its full stop), no promise.
    assert sum(n for t, n in tokens.items() if shape(t) is None) == 208 and sum(tokens.values()) == 254983


def declared_disagreement(sentence: list[str]) -> bool | None:
    """Whether the sentence holds a declared disagreement: a token of DECLARED, a ranking that is not first (or is
    alone), an initial with no word after it. None when a token is of no promised shape."""
    found = False
    for i, token in enumerate(sentence):
        name = shape(token)
        if name is None:
            return None
        found |= declared(name, token)
        found |= name == "ranking" and (i > 0 or len(sentence) == 1)
        found |= name == "initial" and i == len(sentence) - 1
    return found


@needs_conll
@pytest.mark.parametrize("split", ["train", "valid"])
def test_conll_sentences_split_back_into_their_words_unless_a_disagreement_is_declared(split):
    """A sentence's words joined by spaces split back into the same words exactly when it holds no declared
    disagreement (sentences with a token of no promised shape aside)."""
    sentences = [s.words for s in read_conll(CONLL / f"{split}.txt")]
    expected = {i: not declared_disagreement(s) for i, s in enumerate(sentences) if declared_disagreement(s) is not None}
    wrong = [sentences[i] for i, same in expected.items() if (words(" ".join(sentences[i])) == sentences[i]) != same]
    assert wrong == []
    assert 0 < sum(not same for same in expected.values()) < sum(expected.values())  # both kinds occur

"""Raw text -> words, split the way CoNLL-2003 splits them, so that a tagger reads text as it was trained to.

The rules are read off the training data (tests/tag/test_words.py scores them on it): a full stop stays with an
abbreviation ("U.S.", "a.m.", "J. Smith", "Inc.", "vs."), English clitics are words of their own ("John 's",
"do n't"), numbers keep their separators ("1,000", "3.5", "5-1/2", "1996-08-22", "2:29.34", "+44", ".500"), currencies their
sign ("C$", "US$"), a ranking at the start of a text its full stop ("1. Tiger Woods"), and runs of dashes or dots
are one word ("--", "..."). Anything else that is neither a letter, a digit nor a space is a word on its own.

A word is a run of Unicode letters, digits and combining marks (category M: the accents of decomposed Latin, Indic
vowel signs and viramas, Arabic harakat, Thai vowel and tone marks), so a decomposed "José", "हिन्दी" or "ง่าย" stays
one word: the `regex` module's word characters hold the marks, those of the standard `re` do not. Words are matches
in the text as given, so their offsets are code points into it, whatever its normalisation (data/align.py hands the
model their NFC form).
"""

from __future__ import annotations

import regex

# Abbreviations written with a full stop in the CoNLL-2003 training data, with the titles and months beside them.
ABBREVIATIONS = (
    "vs", "St", "Inc", "Corp", "Co", "Ltd", "Bros", "Calif", "Fla", "Dr", "Mr", "Mrs", "Ms", "Jr", "Sr", "Lt", "Rev",
    "Gen", "Sen", "Rep", "Gov", "Mt", "vol", "Jan", "Feb", "Aug", "Sept", "Oct", "Nov", "Dec",
)
CLITICS = ("s", "re", "ve", "ll", "m", "d")  # after an apostrophe, in either case: "'s", "'RE"

WORD = regex.compile(
    rf"""
      (?:\p{{L}}\p{{M}}*\.){{2,}}(?:-\w+)*              # letters each with a full stop: U.S., a.m., U.S.-led
    | (?<![\w.])[A-Z]\.(?=\s)                         # an initial: the J. of J. Smith
    | \b(?:{"|".join(ABBREVIATIONS)})\.               # an abbreviation: Inc., vs.
    | ^\s*\d+\.(?=\s)                                 # a ranking that starts the text: 1. Tiger Woods
    | n['’]t\b                                        # do n't
    | ['’](?i:{"|".join(CLITICS)})\b                  # John 's, they 're
    | \+?\d+(?:,\d{{3}})*(?:[-.:/]\d+(?:,\d{{3}})*)*(?!\w)  # 1,000 3.5 1/2 5-1/2 08/26/96 2:29.34 +0.05
    | \.\d+(?!\p{{M}})                                # .500
    | (?:[A-Z]{{1,2}})\$                              # C$, US$
    | -{{2,}} | \.{{2,}}                              # -- and ...
    | \w+?(?=n['’]t\b)                                # do of don't
    | \w+(?:[-.&]\w+|['’](?!(?i:{"|".join(CLITICS)})\b)\w+)*   # Urdu-speaking, O'Neill, 3.5, 1996-08-22
    | [^\w\s]                                         # any other sign alone
    """,
    regex.VERBOSE,
)


def split_words(text: str) -> list[regex.Match]:
    """The words of `text` as matches, so that each keeps its character offsets (`.start()`, `.end()`)."""
    return list(WORD.finditer(text))

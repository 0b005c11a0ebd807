"""tag/words.py on text beyond ASCII: combining marks stay in their word, and offsets index the text as given."""

from __future__ import annotations

import random
import unicodedata

import pytest

from tag.words import split_words

NFD = lambda text: unicodedata.normalize("NFD", text)  # noqa: E731


@pytest.mark.parametrize("text, expected", [
    (NFD("José María visitó Bogotá ."), [NFD("José"), NFD("María"), NFD("visitó"), NFD("Bogotá"), "."]),
    ("José María visitó Bogotá .", ["José", "María", "visitó", "Bogotá", "."]),  # the same words composed (NFC)
    ("नरेंद्र मोदी ने हिन्दी में कहा", ["नरेंद्र", "मोदी", "ने", "हिन्दी", "में", "कहा"]),  # Devanagari signs, virama
    ("زَارَ مُحَمَّدٌ القَاهِرَةَ .", ["زَارَ", "مُحَمَّدٌ", "القَاهِرَةَ", "."]),  # Arabic with harakat and shadda
    ("ภาษาไทย ง่าย ที่ กรุงเทพฯ", ["ภาษาไทย", "ง่าย", "ที่", "กรุงเทพฯ"]),  # Thai vowel and tone marks
    (NFD("Ü.S. Müller's Straße"), [NFD("Ü.S."), NFD("Müller"), "'s", "Straße"]),  # marks inside the other rules
])
def test_combining_marks_stay_in_their_word(text, expected):
    matches = split_words(text)
    assert [m.group() for m in matches] == expected
    assert all(text[m.start():m.end()] == m.group() for m in matches)  # offsets are code points into the text


def test_no_word_starts_with_a_mark_that_follows_a_letter():
    rng = random.Random(0)
    alphabet = "aZ9 .,'-$&(?é中\t" + "\u0301\u0308\u093f\u094d\u064e\u0651\u0e48"  # the last seven are marks
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        matches = split_words(text)
        assert all(text[m.start():m.end()] == m.group() for m in matches)
        assert "".join(m.group() for m in matches) == "".join(text.split())
        for m in matches:
            before = text[m.start() - 1] if m.start() else " "
            if unicodedata.category(m.group()[0]).startswith("M"):
                assert before.isspace() or unicodedata.category(before)[0] not in "LMN", (text, m.group())

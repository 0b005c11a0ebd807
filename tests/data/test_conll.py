"""data/conll.py: reading and writing CoNLL column files, with file:line errors."""

import io
import re
from collections import Counter
from pathlib import Path

import pytest

from data.conll import (
    ConllFormatError, Sentence, _read_sentences, parse_conll, read_conll, read_tokens, write_conll, write_conlleval,
)
from data.labels import LabelSet
from data.metrics import chunks
from data.schemes import to_iob2
from tests.conll_data import CONLL, WNUT, needs_conll, needs_wnut

FIXTURES = Path(__file__).parent / "fixtures"


def test_read_iob1_four_columns_with_documents():
    sentences = read_conll(FIXTURES / "iob1_4col.txt")
    assert [s.words for s in sentences] == [
        ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
        ["Peter", "Blackburn", "and", "Mary", "Smith", "told", "Jones", "Brown", "Jr", "."],
        ["New", "York", "Times", "Paris", "bureau", "said", "."],
        ["Fans", "from", "Atlanta", "cheered", "."],
        ["LONDON", "1996-08-30"],
    ]
    assert [s.tags for s in sentences] == [
        ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"],
        ["B-PER", "I-PER", "O", "B-PER", "I-PER", "O", "B-PER", "B-PER", "I-PER", "O"],
        ["B-ORG", "I-ORG", "I-ORG", "B-LOC", "O", "O", "O"],
        ["O", "O", "B-MISC", "O", "O"],
        ["B-LOC", "O"],
    ]
    assert [s.doc_id for s in sentences] == [0, 0, 0, 1, 2]
    assert [s.doc_start for s in sentences] == [True, False, False, True, True]
    assert [s.line for s in sentences] == [3, 13, 24, 34, 42]


def test_read_two_columns_iob2_mixed_separators():
    sentences = read_conll(FIXTURES / "iob2_2col.txt", scheme="iob2")
    assert [s.words for s in sentences] == [["Peter", "Blackburn", "visited", "São", "Paulo", "."], ["It", "rained"]]
    assert [s.tags for s in sentences] == [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"], ["O", "O"]]
    assert [s.doc_id for s in sentences] == [0, 1]  # no -DOCSTART-: each sentence its own document
    assert not any(s.doc_start for s in sentences)
    assert read_conll(FIXTURES / "iob2_2col.txt", scheme="iob1") == sentences  # IOB2 reads the same as IOB1


def test_read_one_column_tokens_has_no_tags():
    sentences = read_conll(FIXTURES / "tokens_1col.txt")
    assert [(s.words, s.tags, s.doc_id, s.doc_start) for s in sentences] == [
        (["Hello", "world"], None, 0, True),
        (["Second", "document", "."], None, 1, True),
    ]


def test_declared_iob2_rejects_i_that_does_not_continue(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("Peter B-PER\nsaid O\n\nthe O\nPope I-PER\n")
    with pytest.raises(ConllFormatError, match=re.escape(f"{path}:5: I-PER after O")):
        read_conll(path, scheme="iob2")
    assert read_conll(path, scheme="iob1")[1].tags == ["O", "B-PER"]
    path.write_text("Big B-ORG\nApple I-LOC\n")
    with pytest.raises(ConllFormatError, match=re.escape(f"{path}:2: I-LOC after B-ORG")):
        read_conll(path, scheme="iob2")


def test_crlf_trailing_whitespace_bom_and_blank_whitespace_lines(tmp_path):
    clean = "-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\ncalls VBZ I-VP O\n\nPeter NNP I-NP I-PER\n"
    messy = (
        "\ufeff-DOCSTART- -X- O O\r\n \t\r\nEU NNP I-NP I-ORG  \r\ncalls\tVBZ\tI-VP\tO\t\r\n"
        "   \r\nPeter NNP I-NP I-PER\r\n\r\n\r\n"
    )
    (tmp_path / "clean.txt").write_text(clean, encoding="utf-8")
    (tmp_path / "messy.txt").write_bytes(messy.encode("utf-8"))
    expected = read_conll(tmp_path / "clean.txt")
    assert [s.words for s in expected] == [["EU", "calls"], ["Peter"]]
    assert read_conll(tmp_path / "messy.txt") == expected
    (tmp_path / "old_mac.txt").write_bytes(clean.replace("\n", "\r").encode("utf-8"))  # CR alone ends a line too
    assert read_conll(tmp_path / "old_mac.txt") == expected


@pytest.mark.parametrize(
    "data, line, byte, column",
    [
        ("EU B-ORG\n\nJosé B-PER\n".encode("latin-1"), 3, 0xE9, 4),
        ("\u201cHi\u201d O\n".encode("cp1252"), 1, 0x93, 1),
        (b"\xef\xbb\xbfEU B-ORG\nS\xc3\xa3o\x93 O\n", 2, 0x93, 4),  # columns count characters, not bytes
        (b"\xef\xbb\xbfS\xe3o B-LOC\n", 1, 0xE3, 2),  # the byte-order mark is not a column
    ],
    ids=["latin-1", "cp1252", "after-multibyte", "after-bom"],
)
@pytest.mark.parametrize("read", [read_conll, lambda path: list(read_tokens(path))], ids=["read_conll", "read_tokens"])
def test_a_file_that_is_not_utf8_is_one_error_naming_line_and_column(tmp_path, data, line, byte, column, read):
    path = tmp_path / "latin.txt"
    path.write_bytes(data)
    with pytest.raises(ConllFormatError) as error:
        read(path)
    message = str(error.value)
    assert message.startswith(f"{path}:{line}: not valid UTF-8 (byte 0x{byte:02x} at column {column}); ")
    assert "iconv -f cp1252 -t utf-8" in message and "\n" not in message


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("EU NNP I-NP I-ORG\nrejects VBZ O\n", 2, "expected 4 columns (as on line 1), got 3"),
        ("EU B-ORG\n\nrejects\n", 3, "expected 2 columns (as on line 1), got 1"),
        ("EU B-ORG\n O\n", 2, "line starts with whitespace (empty token)"),
        ("EU B-ORG\nrejects B_FOO\n", 2, "malformed tag 'B_FOO'"),
        ("EU B-ORG\nrejects X-PER\n", 2, "malformed tag 'X-PER'"),
        ("EU B-ORG\nrejects E-PER\n", 2, "E-PER follows B-ORG, but BIOES closes a B-ORG entity with E-ORG"),
        ("-DOCSTART- -X- O O\n\n-DOCSTART- -X- O O\n\nEU B-ORG\n", 1, "-DOCSTART- starts a document with no sentence"),
        ("EU B-ORG\n\n-DOCSTART- -X- O O\n\n", 3, "-DOCSTART- starts a document with no sentence"),
    ],
    ids=["columns", "columns-later", "empty-token", "underscore-tag", "unknown-prefix", "bad-bioes", "empty-document",
         "docstart-at-end"],
)
def test_malformed_input_names_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ConllFormatError, match=re.escape(f"{path}:{line}: {message}")):
        read_conll(path)
    with pytest.raises(ConllFormatError, match=re.escape(f"snippet:{line}: {message}")):
        parse_conll(text, source="snippet")


def test_unknown_scheme_is_an_error():
    with pytest.raises(ValueError, match="scheme"):
        parse_conll("EU B-ORG\n", scheme="bilou")


def test_bioes_and_iob1_files_read_into_the_same_iob2_entities():
    iob1 = read_conll(FIXTURES / "iob1_4col.txt")  # the same sentences, IOB1 in 4 columns and BIOES in 2
    bioes = read_conll(FIXTURES / "bioes_2col.txt")
    assert bioes == read_conll(FIXTURES / "bioes_2col.txt", scheme="bioes")
    assert [(s.words, s.tags, s.doc_id) for s in bioes] == [(s.words, s.tags, s.doc_id) for s in iob1]
    assert chunks(bioes[1].tags) == [("PER", 0, 1), ("PER", 3, 4), ("PER", 6, 6), ("PER", 7, 8)]
    with pytest.raises(ConllFormatError, match=r"bioes_2col.txt:3: S-ORG is a BIOES tag, but the file is read as IOB1"):
        read_conll(FIXTURES / "bioes_2col.txt", scheme="iob1")


def test_a_tag_outside_the_run_labels_names_file_line_and_label_set(tmp_path):
    path = tmp_path / "valid.txt"
    path.write_text("Acme B-ORG\nsells O\n\nthe O\nWidget B-product\n")
    labels = LabelSet.from_types(["ORG", "PER"])
    message = f"{path}:5: tag B-product is not in the run's label set (O, B-ORG, I-ORG, B-PER, I-PER)"
    with pytest.raises(ConllFormatError, match=re.escape(message)):
        read_conll(path, labels=labels)
    assert read_conll(path)[1].tags == ["O", "B-product"]  # without a label set any type reads


def test_write_conlleval_keeps_docstarts(tmp_path):
    sentences = read_conll(FIXTURES / "iob1_4col.txt")
    predictions = [["O"] * len(s.words) for s in sentences]
    predictions[4] = ["B-LOC", "B-PER"]
    out = tmp_path / "eval.txt"
    write_conlleval(out, sentences, predictions)
    lines = out.read_text().split("\n")
    assert lines[:5] == ["-DOCSTART- O O", "", "EU B-ORG O", "rejects O O", "German B-MISC O"]
    assert lines[-6:] == ["-DOCSTART- O O", "", "LONDON B-LOC B-LOC", "1996-08-30 O B-PER", "", ""]
    # Same line structure as the source: a token line for a token line, DOCSTART and blanks in place.
    source = (FIXTURES / "iob1_4col.txt").read_text().split("\n")
    assert line_shapes(lines[:-2]) == line_shapes(source[:-1])
    # Reading it back (the last column is the prediction) keeps words and documents.
    back = read_conll(out)
    assert [(s.words, s.doc_id, s.doc_start) for s in back] == [(s.words, s.doc_id, s.doc_start) for s in sentences]
    assert [s.tags for s in back] == predictions


def line_shapes(lines: list[str]) -> list[str]:
    return ["docstart" if line.startswith("-DOCSTART-") else "token" if line else "blank" for line in lines]


def test_write_conll_round_trip_and_errors(tmp_path):
    sentences = read_conll(FIXTURES / "iob1_4col.txt")
    write_conll(tmp_path / "two.txt", sentences, [[s.tags for s in sentences]])
    assert read_conll(tmp_path / "two.txt", scheme="iob2") == read_conll(FIXTURES / "iob1_4col.txt")
    with pytest.raises(ValueError, match="sentence 1 .* has no gold tags"):
        write_conlleval(tmp_path / "x.txt", [Sentence(["a"], ["O"]), Sentence(["b"])], [["O"], ["O"]])
    with pytest.raises(ValueError, match="column 0, sentence 0 .*: 1 tags for 2 words"):
        write_conll(tmp_path / "x.txt", [Sentence(["a", "b"])], [[["O"]]])
    with pytest.raises(ValueError, match="column 0 has tags for 0 sentences, expected 1"):
        write_conll(tmp_path / "x.txt", [Sentence(["a"])], [[]])
    with pytest.raises(ValueError, match="'New York' cannot be a CoNLL token"):
        write_conll(tmp_path / "x.txt", [Sentence(["New York"])], [[["B-LOC"]]])
    with pytest.raises(ValueError, match="2 words but 1 tags"):
        Sentence(["a", "b"], ["O"])


@needs_conll
def test_real_dev_set_statistics(tmp_path):
    path = CONLL / "valid.txt"
    sentences = read_conll(path)
    assert len(sentences) == 3250
    assert sum(len(s.words) for s in sentences) == 51362
    entities = Counter(tag[2:] for s in sentences for tag in s.tags if tag.startswith("B-"))
    assert entities == {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}
    assert sum(s.doc_start for s in sentences) == 216
    assert sorted({s.doc_id for s in sentences}) == list(range(216))
    assert all(to_iob2(s.tags, "iob2") == s.tags for s in sentences)  # strict IOB2 accepts them unchanged
    # conlleval output reproduces the file line for line (DOCSTARTs, blanks, tokens, gold tags).
    out = tmp_path / "valid.eval"
    write_conlleval(out, sentences, [s.tags for s in sentences])
    original = path.read_text().rstrip("\n").split("\n")
    written = out.read_text().rstrip("\n").split("\n")
    assert len(written) == len(original)
    for ours, theirs in zip(written, original):
        if theirs.startswith("-DOCSTART-"):
            assert ours == "-DOCSTART- O O"
        else:
            assert ours.split(" ")[0] == theirs.split(" ")[0] and bool(ours) == bool(theirs)
    assert read_conll(out, scheme="iob2") == sentences


@needs_conll
def test_real_train_set_statistics():
    sentences = read_conll(CONLL / "train.txt")
    assert (len(sentences), sum(len(s.words) for s in sentences)) == (14041, 203621)
    entities = Counter(tag[2:] for s in sentences for tag in s.tags if tag.startswith("B-"))
    assert entities == {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}
    assert sentences[-1].doc_id == 945


@needs_wnut
def test_wnut17_files_read():
    train, valid = read_conll(WNUT / "train.txt"), read_conll(WNUT / "valid.txt")
    assert [(len(s), sum(len(x.words) for x in s)) for s in (train, valid)] == [(3394, 62730), (1009, 15733)]
    assert [s.doc_id for s in train] == list(range(3394))  # no -DOCSTART-: every post its own document
    counts = Counter(tag for s in train for tag in s.tags)
    assert counts["B-person"] == 660 and counts["I-creative-work"] == 206 and counts["O"] == 59570  # its README
    assert list(LabelSet.from_sentences((s.tags for s in train), "train.txt")) == [
        "O", "B-corporation", "I-corporation", "B-creative-work", "I-creative-work", "B-group", "I-group",
        "B-location", "I-location", "B-person", "I-person", "B-product", "I-product"]


def test_read_tokens_reads_the_first_column_only_and_one_sentence_at_a_time(tmp_path):
    """Sentences before the first -DOCSTART- are documents of their own (all of them, in a file without any), as
    read_conll reads them; the columns after the token are never read, so no count or tag of theirs is checked."""
    text = "Alone NNP\n\nToo\n\n-DOCSTART- -X- O\n\nEU NNP B-ORG x\nrejects\n\nPeter PER\n\n-DOCSTART-\n\nParis\n"
    path = tmp_path / "mixed.txt"
    path.write_text(text)
    lines_read = []

    def counting(lines):
        for line in lines:
            lines_read.append(line)
            yield line

    reader = _read_sentences(counting(io.StringIO(text)), str(path), tokens_only=True)
    assert next(reader).words == ["Alone"] and len(lines_read) == 3  # handed out once its blank line is read
    sentences = list(read_tokens(path))
    assert [s.words for s in sentences] == [["Alone"], ["Too"], ["EU", "rejects"], ["Peter"], ["Paris"]]
    assert [s.doc_id for s in sentences] == [0, 1, 2, 2, 3] and all(s.tags is None for s in sentences)
    assert [s.doc_start for s in sentences] == [False, False, True, False, True]
    assert [s.line for s in sentences] == [1, 3, 7, 10, 14]
    tagged = tmp_path / "tagged.txt"
    tagged.write_text("Alone O\n\nToo O\n\n-DOCSTART- O\n\nEU B-ORG\nrejects O\n\nPeter B-PER\n\n-DOCSTART- O\n\nParis O\n")
    assert [(s.words, s.doc_id) for s in read_conll(tagged)] == [(s.words, s.doc_id) for s in sentences]
    with pytest.raises(ConllFormatError, match=f"{path}:2: line starts with whitespace"):
        path.write_text("EU B-ORG\n\tB-ORG\n")
        list(read_tokens(path))

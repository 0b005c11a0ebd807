"""tag/html.py: entities rendered as marks, read back by the standard library's HTML parser (not by string
matching the renderer's own output): every entity once, with its text, type and score, all user text escaped."""

from __future__ import annotations

import io
import json
import re
import sys
from types import SimpleNamespace

import pytest

from tag import evaluate as evaluate_cli
from tag import predict as predict_cli
from tag.html import Comparison, app_page, entities_page, gold_vs_predicted_page, render_entities, type_colours
from tag.tagger import Entity, load_tagger
from tests.tag.html_marks import Marks

NASTY_TYPE = '</script><img src=x onerror="alert(1)">&amp;'
TYPES = ["PER", "ORG", NASTY_TYPE]
TEXT = "Tom & <script>alert('x')</script> met ACME at 5 < 6 in 𝔓aris."


def entity(kind: str, text: str, part: str, score: float = 0.5, occurrence: int = 0) -> Entity:
    start = [m.start() for m in re.finditer(re.escape(part), text)][occurrence]
    return Entity(kind, part, start, start + len(part), score)


ENTITIES = [entity("PER", TEXT, "Tom", 0.987), entity(NASTY_TYPE, TEXT, "<script>alert('x')</script>", 0.25),
            entity("ORG", TEXT, "ACME", 0.5), entity("PER", TEXT, "𝔓aris", 0.0049)]


def test_every_entity_is_marked_once_with_its_text_type_score_and_all_user_text_is_escaped():
    marks = Marks(render_entities(TEXT, ENTITIES, TYPES))
    assert marks.text == TEXT  # nothing lost, nothing doubled, nothing parsed as markup
    assert [(m["text"], m["label"], m["score"]) for m in marks.marks] == [
        ("Tom", "PER", "0.99"), ("<script>alert('x')</script>", NASTY_TYPE, "0.25"), ("ACME", "ORG", "0.50"),
        ("𝔓aris", "PER", "0.00")]
    assert [tag for tag, _ in marks.tags] == ["mark", "span", "span"] * 4  # no <script>, no <img>


def test_a_type_keeps_its_colour_on_every_page_and_the_types_of_a_run_are_told_apart():
    marks = Marks(render_entities(TEXT, ENTITIES, TYPES)).marks
    assert marks[0]["colour"] == marks[3]["colour"] == type_colours(TYPES)["PER"]
    assert len({marks[0]["colour"], marks[1]["colour"], marks[2]["colour"]}) == 3
    alone = Marks(render_entities("ACME", [Entity("ORG", "ACME", 0, 4, 0.9)], TYPES)).marks
    assert alone[0]["colour"] == marks[2]["colour"]  # by the type's place in the run, not by what else the text has
    many = [f"T{i}" for i in range(40)]
    hues = sorted(int(re.match(r"hsl\((\d+),", c).group(1)) for c in type_colours(many).values())
    assert len(set(hues)) == 40 and min(b - a for a, b in zip(hues, hues[1:])) >= 4
    first = sorted(int(re.match(r"hsl\((\d+),", c).group(1)) for c in type_colours(many[:6]).values())
    assert min(b - a for a, b in zip(first + [first[0] + 360], first[1:] + [first[0] + 360])) >= 30


@pytest.mark.parametrize("entities, message", [
    ([Entity("ORG", "ACME", 0, 4, 0.5)], "not a span of the text"),  # "Tom " is at 0
    ([ENTITIES[2], ENTITIES[0]], "not a span of the text after the entity before it"),
    ([Entity("PER", "Tom &", 0, 5, 0.5), Entity("PER", "& <", 4, 7, 0.5)], "after the entity before it"),
    ([Entity("LOC", "Tom", 0, 3, 0.5)], "type 'LOC' is not one of the run's types"),
])
def test_entities_that_are_not_the_texts_in_order_are_refused(entities, message):
    with pytest.raises(ValueError, match=message):
        render_entities(TEXT, entities, TYPES)


def test_predict_page_keeps_every_input_in_its_place_errors_included():
    html = entities_page([(TEXT, ENTITIES), ValueError("<stdin>:2: not valid UTF-8 <b>"), ("", [])], TYPES)
    marks = Marks(html)
    assert [m["text"] for m in marks.marks if "label" in m and m["text"]] == [e.text for e in ENTITIES]
    assert "error: <stdin>:2: not valid UTF-8 <b>" in marks.text
    assert [m for m in re.findall(r"input \d+", marks.text)] == ["input 1", "input 2", "input 3"]
    assert ("b", {}) not in marks.tags


def test_gold_against_predicted_marks_and_counts_misses_and_false_alarms():
    text = "Tom met ACME in Paris & Rome"
    gold = [entity("PER", text, "Tom"), entity("ORG", text, "ACME"), entity(NASTY_TYPE, text, "Paris")]
    predicted = [entity("PER", text, "Tom"), entity("PER", text, "ACME"), entity(NASTY_TYPE, text, "Rome")]
    right = Comparison("valid.txt:7", "Tom", [entity("PER", "Tom", "Tom")], [entity("PER", "Tom", "Tom")])
    html = gold_vs_predicted_page([Comparison("valid.txt:3", text, gold, predicted), right], TYPES, "valid.txt")
    marks = Marks(html).marks[len(TYPES) + 2:]  # after the legend and the two marks of the key
    flags = [(m["text"], m["label"], " ".join(m["classes"])) for m in marks]
    assert flags == [("Tom", "PER", "entity"), ("ACME", "ORG", "entity miss"), ("Paris", NASTY_TYPE, "entity miss"),
                     ("Tom", "PER", "entity"), ("ACME", "PER", "entity false-alarm"),
                     ("Rome", NASTY_TYPE, "entity false-alarm"),
                     ("Tom", "PER", "entity"), ("Tom", "PER", "entity")]
    head, *rows = Marks(html).rows
    assert head == ["type", "gold", "predicted", "correct", "misses", "false alarms", "precision", "recall", "F1"]
    # counted by hand; precision, recall and F1 in percent from them
    assert rows == [["PER", "2", "3", "2", "0", "1", "66.67", "100.00", "80.00"],
                    ["ORG", "1", "0", "0", "1", "0", "0.00", "0.00", "0.00"],
                    [NASTY_TYPE, "1", "1", "0", "1", "1", "0.00", "0.00", "0.00"],
                    ["all types", "4", "4", "2", "2", "2", "50.00", "50.00", "50.00"]]
    assert 'class="item wrong"' in html and html.count('class="item"') == 1  # the right one hidden by default
    assert "only the 1 of 2 sentences" in html
    assert ("img", {"src": "x", "onerror": "alert(1)"}) not in Marks(html).tags


def test_pages_are_self_contained_and_a_type_name_cannot_close_the_script():
    pages = [entities_page([(TEXT, ENTITIES)], TYPES), app_page(TYPES),
             gold_vs_predicted_page([Comparison("x:1", TEXT, ENTITIES, ENTITIES[:2])], TYPES, "x")]
    for html in pages:
        parsed = Marks(html)
        assert not re.search(r"https?://|@import|url\(", html)
        assert not [tag for tag, attrs in parsed.tags if tag in ("link", "img", "iframe") or "src" in attrs]
    scripts = re.findall(r"<script>(.*?)</script>", pages[1], re.S)
    assert len(scripts) == 1 and NASTY_TYPE not in scripts[0] and "\\u003c/script\\u003e" in scripts[0]
    assert [tag for tag, _ in Marks(pages[1]).tags].count("script") == 1


def api_entities(run_dir, texts=None, words=None) -> list[list[Entity]]:
    tagger = load_tagger(run_dir, device="cpu")
    return tagger.tag(texts) if words is None else tagger.tag_words(words)


def page_entities(marks: list[dict]) -> list[tuple[str, str, float]]:
    return [(m["text"], m["label"], float(m["title"].rsplit(" ", 1)[1])) for m in marks]


def test_predict_html_writes_each_text_with_the_entities_the_api_finds(random_run, tmp_path, monkeypatch, capsys):
    texts = ["Peter Blackburn met EU officials in Brussels .", "<script>alert(1)</script> & Ōsaka", "",
             "Angela Merkel visited Paris and Rome with Nicolas Sarkozy ."]
    page = tmp_path / "entities.html"
    assert predict_cli.main(["--run", str(random_run), "--device", "cpu", "--html", str(page), *texts]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # the JSON lines, as without --html
    expected = api_entities(random_run, texts)
    assert [a["entities"] for a in answers] == [[vars(e) for e in found] for found in expected]
    marks = Marks(page.read_text(encoding="utf-8"))
    entities = [m for m in marks.marks if m["text"]]  # the legend's marks hold a label only
    assert sum(map(len, expected)) >= 4, "the random tagger should find entities to show"
    found = page_entities(entities)
    assert [(t, k) for t, k, _ in found] == [(e.text, e.type) for es in expected for e in es]
    assert [s for _, _, s in found] == pytest.approx([e.score for es in expected for e in es], abs=1e-4)
    assert all(text in marks.text for text in texts) and ("script", {}) not in marks.tags[1:]
    assert sorted(tmp_path.iterdir()) == [page]  # written whole: no temporary file left beside it


def test_predict_html_keeps_a_line_that_is_not_text_as_its_error_and_refuses_what_it_cannot_write(
        random_run, tmp_path, monkeypatch, capsys):
    page = tmp_path / "entities.html"
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b"Brussels\nS\xc3\xa3o \xff\nRome\n")))
    assert predict_cli.main(["--run", str(random_run), "--device", "cpu", "--html", str(page)]) == 2
    assert "error: <stdin>:2: not valid UTF-8" in capsys.readouterr().err
    text = Marks(page.read_text(encoding="utf-8")).text
    assert text.index("Brussels") < text.index("error: <stdin>:2: not valid UTF-8") < text.index("Rome")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for flags, message in ((["--html", str(tmp_path), "x"], f"--html {tmp_path}: not a regular file"),
                           (["--html", str(tmp_path / "link"), "x"], "not a regular file"),
                           (["--html", str(page), "--conll", "in.txt"], "--html is for texts")):
        with pytest.raises(SystemExit) as exit_:
            predict_cli.main(["--run", str(random_run), *flags])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "target").exists()


GOLD_FILE = """-DOCSTART- -X- -X- O

Peter B-PER
Blackburn I-PER
met O
EU B-ORG
officials O
in O
Brussels B-LOC
. O

-DOCSTART- -X- -X- O

<script> B-MISC
& O
Angela B-PER
Merkel I-PER
visited O
Paris B-LOC

-DOCSTART- -X- -X- O

No O
entities O
here O
"""
GOLD = [[("Peter Blackburn", "PER"), ("EU", "ORG"), ("Brussels", "LOC")],  # by hand, from GOLD_FILE
        [("<script>", "MISC"), ("Angela Merkel", "PER"), ("Paris", "LOC")], []]


def test_evaluate_html_shows_gold_against_what_the_api_predicts_sentence_by_sentence(random_run, tmp_path, capsys):
    data, page = tmp_path / "gold.txt", tmp_path / "page.html"
    data.write_text(GOLD_FILE)
    assert evaluate_cli.main(["--run", str(random_run), "--device", "cpu", "--data", str(data),
                              "--html", str(page)]) == 0
    report = capsys.readouterr().out
    html = page.read_text(encoding="utf-8")
    marks = [m for m in Marks(html).marks if "title" in m]  # the sentences' marks: not the legend's, not the key's
    # each sentence its own document: the documents view tags it alone, as the API's tag_words does
    predicted = api_entities(random_run, words=[[line.split()[0] for line in block.splitlines()]
                                              for block in GOLD_FILE.split("\n\n")[1::2]])
    gold_marks, predicted_marks, at = [], [], 0
    for gold, expected in zip(GOLD, predicted):  # each sentence: its gold marks, then its predicted ones
        gold_marks.append(marks[at:at + len(gold)])
        predicted_marks.append(marks[at + len(gold):at + len(gold) + len(expected)])
        at += len(gold) + len(expected)
    assert at == len(marks) and sum(map(len, predicted)) >= 3, "the random tagger should predict entities"
    for gold, expected, gold_found, predicted_found in zip(GOLD, predicted, gold_marks, predicted_marks):
        assert [(m["text"], m["label"]) for m in gold_found] == gold
        assert [(m["text"], m["label"]) for m in predicted_found] == [(e.text, e.type) for e in expected]
        assert [s for _, _, s in page_entities(predicted_found)] == pytest.approx([e.score for e in expected],
                                                                                  abs=1e-4)
        hits = set(gold) & {(e.text, e.type) for e in expected}
        assert [("miss" in m["classes"]) for m in gold_found] == [(g not in hits) for g in gold]
        assert [("false-alarm" in m["classes"]) for m in predicted_found] == [
            ((e.text, e.type) not in hits) for e in expected]
    correct = sum(len(set(g) & {(e.text, e.type) for e in p}) for g, p in zip(GOLD, predicted))
    found = sum(map(len, predicted))
    assert f"with 6 phrases; found: {found} phrases; correct: {correct}." in report  # conlleval counts alike
    total = next(row for row in Marks(html).rows if row[0] == "all types")
    assert total[1:6] == [str(n) for n in (6, found, correct, 6 - correct, found - correct)]
    assert f"{data}:3" in html and f"{data}:14" in html and f"{data}:23" in html  # where each sentence starts

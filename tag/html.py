"""Entities shown as a person reads them, displaCy-like: each entity a <mark> coloured by its type, with the type and
the score after its text. Pages are self-contained (inline CSS and JavaScript, nothing fetched, no build step).

    render_entities(text, entities, types)   an HTML fragment: the text with its entities marked
    entities_page(items, types)              predict --html: each text with its entities
    gold_vs_predicted_page(...)              evaluate --html: gold against predicted, misses and false alarms marked
    app_page(types)                          the server's GET /: paste a text, POST it to /v1/tag, see the entities

A type's colour comes from its index in the run's types (`type_colours`), so the types of one run are told apart
and keep their colours on every page of that run, whatever their names. Every string from a user (texts, type
names, error messages) is escaped here, or set as text, never as markup, by the page's script.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from tag.tagger import Entity

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 60em; color: #222; }
.text { line-height: 2.6; white-space: pre-wrap; overflow-wrap: anywhere; }
mark.entity { background: var(--colour); padding: 0.2em 0.35em; margin: 0 0.1em; border-radius: 0.35em;
              box-decoration-break: clone; -webkit-box-decoration-break: clone; color: inherit; }
mark .label { font-size: 0.7em; font-weight: bold; margin-left: 0.4em; vertical-align: middle; }
mark .score { font-size: 0.65em; margin-left: 0.3em; vertical-align: middle; opacity: 0.75; }
mark.miss { outline: 0.15em dashed #c00; }
mark.false-alarm { outline: 0.15em solid #c00; }
.legend { margin: 1em 0; } .legend mark { margin-right: 0.5em; }
.item { border-top: 1px solid #ddd; padding: 0.6em 0; }
.meta, .side { color: #777; font-size: 0.8em; } .side { display: inline-block; width: 6em; }
.error-text { color: #c00; white-space: pre-wrap; }
table { border-collapse: collapse; } td, th { padding: 0.2em 0.8em; text-align: right; border-bottom: 1px solid #eee; }
#errors-only:checked ~ .items .item:not(.wrong) { display: none; }
"""


def type_colours(types: Sequence[str]) -> dict[str, str]:
    """A background colour for each type, by its index: hues a golden angle apart, so that any number of types gets
    distinct colours, the first few very distinct, all light enough for dark text."""
    return {kind: f"hsl({i * 137.508 % 360:.0f}, 80%, 82%)" for i, kind in enumerate(types)}


def render_entities(text: str, entities: Sequence[Entity], types: Sequence[str],
                    flagged: Sequence[Entity] = (), flag: str = "") -> str:
    """`text` with each entity a <mark class="entity"> coloured by its type (one of the run's `types`), its type and
    score after it; the `flagged` entities get the class `flag` as well. Entities come in text order, without
    overlap, with `text[start:end] == entity.text`, as the tagger returns them; anything else is a ValueError."""
    colours = type_colours(types)
    flagged_spans = {(e.type, e.start, e.end) for e in flagged}
    parts, at = [], 0
    for e in entities:
        if e.type not in colours:
            raise ValueError(f"entity {e}: type {e.type!r} is not one of the run's types {list(types)}")
        if not at <= e.start < e.end <= len(text) or text[e.start:e.end] != e.text:
            raise ValueError(f"entity {e}: not a span of the text after the entity before it")
        classes = "entity" + (f" {flag}" if (e.type, e.start, e.end) in flagged_spans else "")
        parts.append(f'{escape(text[at:e.start])}<mark class="{classes}" style="--colour: {colours[e.type]}" '
                     f'title="{escape(e.type)} {e.score:.4f}">{escape(e.text)}<span class="label">'
                     f'{escape(e.type)}</span><span class="score">{e.score:.2f}</span></mark>')
        at = e.end
    return "".join(parts) + escape(text[at:])


def legend(types: Sequence[str]) -> str:
    return '<div class="legend">' + "".join(
        f'<mark class="entity" style="--colour: {colour}"><span class="label">{escape(kind)}</span></mark>'
        for kind, colour in type_colours(types).items()) + "</div>"


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n</body></html>\n")


def entities_page(items: Sequence[tuple[str, Sequence[Entity]] | Exception], types: Sequence[str],
                  title: str = "Entities") -> str:
    """A page of texts with their entities, in input order; an input that could not be read (an exception naming
    it) keeps its place as an error line."""
    rows = []
    for i, item in enumerate(items):
        if isinstance(item, Exception):
            rows.append(f'<div class="item"><div class="meta">input {i + 1}</div>'
                        f'<div class="error-text">error: {escape(str(item))}</div></div>')
        else:
            rows.append(f'<div class="item"><div class="meta">input {i + 1}</div>'
                        f'<div class="text">{render_entities(item[0], item[1], types)}</div></div>')
    return page(title, legend(types) + '<div class="items">' + "\n".join(rows) + "</div>")


@dataclass(frozen=True)
class Comparison:
    """One sentence of evaluate's page: its words joined by single spaces, and the entities in that text."""
    where: str  # the file and line of its first word, e.g. "valid.txt:12"
    text: str
    gold: Sequence[Entity]  # scored too: the probability the tagger gave each gold span
    predicted: Sequence[Entity]


def gold_vs_predicted_page(sentences: Sequence[Comparison], types: Sequence[str], title: str) -> str:
    """Gold against predicted entities, sentence by sentence, for error analysis: a miss (a gold entity not
    predicted with its type and span) and a false alarm (a predicted entity not in gold) are outlined in red.
    At the top, the counts by type; by default only the sentences with an error are shown (a checkbox shows all)."""
    counts: dict[str, Counter] = {kind: Counter() for kind in types}
    rows, wrong = [], 0
    for s in sentences:
        gold, predicted = {(e.type, e.start, e.end) for e in s.gold}, {(e.type, e.start, e.end) for e in s.predicted}
        misses = [e for e in s.gold if (e.type, e.start, e.end) not in predicted]
        false_alarms = [e for e in s.predicted if (e.type, e.start, e.end) not in gold]
        for e in s.gold:
            counts[e.type]["gold"] += 1
        for e in s.predicted:
            counts[e.type]["predicted"] += 1
            counts[e.type]["correct"] += (e.type, e.start, e.end) in gold
        wrong += bool(misses or false_alarms)
        rows.append(f'<div class="item{" wrong" if misses or false_alarms else ""}">'
                    f'<div class="meta">{escape(s.where)}</div>'
                    f'<div class="text"><span class="side">gold</span>'
                    f'{render_entities(s.text, s.gold, types, misses, "miss")}</div>'
                    f'<div class="text"><span class="side">predicted</span>'
                    f'{render_entities(s.text, s.predicted, types, false_alarms, "false-alarm")}</div></div>')
    body = (summary(counts) + legend(types) +
            '<p><mark class="entity miss" style="--colour: #eee">miss</mark> a gold entity not predicted (its score: '
            'the probability the tagger gave it) &nbsp; <mark class="entity false-alarm" style="--colour: #eee">'
            'false alarm</mark> a predicted entity not in gold</p>\n'
            f'<input type="checkbox" id="errors-only" checked> <label for="errors-only">only the {wrong} of '
            f'{len(rows)} sentences with a miss or a false alarm</label>\n'
            '<div class="items">' + "\n".join(rows) + "</div>")
    return page(title, body)


def summary(counts: dict[str, Counter]) -> str:
    """A table of gold, predicted, correct, misses and false alarms by type and overall, with P / R / F1."""
    rows = []
    for name, c in [*counts.items(), (None, sum(counts.values(), Counter()))]:
        misses, false_alarms = c["gold"] - c["correct"], c["predicted"] - c["correct"]
        precision = 100 * c["correct"] / c["predicted"] if c["predicted"] else 0.0
        recall = 100 * c["correct"] / c["gold"] if c["gold"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        head = '<tr class="total"><th>all types</th>' if name is None else f'<tr><th>{escape(name)}</th>'
        rows.append(f'{head}<td>{c["gold"]}</td>'
                    f'<td>{c["predicted"]}</td><td>{c["correct"]}</td><td class="misses">{misses}</td>'
                    f'<td class="false-alarms">{false_alarms}</td>'
                    f"<td>{precision:.2f}</td><td>{recall:.2f}</td><td>{f1:.2f}</td></tr>")
    return ('<table class="summary"><tr><th>type</th><th>gold</th><th>predicted</th><th>correct</th><th>misses</th>'
            "<th>false alarms</th><th>precision</th><th>recall</th><th>F1</th></tr>" + "".join(rows) + "</table>")


APP_SCRIPT = """
const COLOURS = __COLOURS__;  // type -> colour, as type_colours gives them in Python
const result = document.getElementById("result"), error = document.getElementById("error");

function render(text, entities) {  // the markup of render_entities in tag/html.py, built as DOM nodes, never parsed
  const chars = Array.from(text);  // code points: the offsets count them, as Python string indices do
  let at = 0;
  result.replaceChildren();
  for (const e of entities) {
    const mark = document.createElement("mark"), label = document.createElement("span"),
          score = document.createElement("span");
    mark.className = "entity";
    mark.style.setProperty("--colour", COLOURS[e.type]);
    mark.title = e.type + " " + e.score.toFixed(4);
    label.className = "label";
    label.textContent = e.type;
    score.className = "score";
    score.textContent = e.score.toFixed(2);
    mark.append(e.text, label, score);
    result.append(chars.slice(at, e.start).join(""), mark);
    at = e.end;
  }
  result.append(chars.slice(at).join(""));
}

async function tag() {
  const text = document.getElementById("text").value, token = document.getElementById("token").value;
  const headers = {"Content-Type": "application/json"};
  if (token) headers["Authorization"] = "Bearer " + token;
  error.textContent = "";
  result.dataset.state = "busy";
  try {
    const response = await fetch("v1/tag", {method: "POST", headers, body: JSON.stringify({texts: [text]})});
    const answer = await response.json().catch(() => null);
    if (!response.ok) {
      const e = answer && answer.error;  // the server's errors name the field; anything else: the HTTP status
      throw new Error(e ? e.message + (e.field ? " (" + e.field + ")" : "")
                        : response.status + " " + response.statusText);
    }
    render(text, answer.results[0].entities);
    result.dataset.state = "done";
  } catch (e) {
    result.replaceChildren();
    error.textContent = "error: " + e.message;
    result.dataset.state = "error";
  }
}

document.getElementById("tag").addEventListener("click", tag);
document.getElementById("text").addEventListener("keydown", e => { if (e.key === "Enter" && e.ctrlKey) tag(); });
"""


def app_page(types: Sequence[str]) -> str:
    """The page the server serves at GET /: a text box, an optional bearer token, a button; its script POSTs
    {"texts": [text]} to /v1/tag and shows the answer's entities as render_entities would, or the error as text."""
    colours = json.dumps(type_colours(types))  # inside <script>: no "</script>" or "<!--" from a type's name
    colours = colours.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    body = (legend(types) +
            '<textarea id="text" rows="6" style="width: 100%" placeholder="Paste a text, then Tag (Ctrl+Enter)">'
            '</textarea>\n<p><button id="tag" type="button">Tag</button> '
            '<input id="token" type="password" placeholder="bearer token (if the server asks for one)" size="36">'
            '</p>\n<div id="error" class="error-text" role="alert"></div>\n'
            '<div id="result" class="text" data-state="idle"></div>\n'
            f"<script>{APP_SCRIPT.replace('__COLOURS__', colours)}</script>")
    return page("Tag entities", body)

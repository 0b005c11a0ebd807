"""Pages read back as a browser's parser reads them (the standard library's HTMLParser), for the tests of
tag/html.py and of the server's page: independent of how the renderer builds its strings."""

from __future__ import annotations

import re
from html.parser import HTMLParser

VOID = {"meta", "input", "br", "img", "link"}  # elements without an end tag


class Marks(HTMLParser):
    """The marks of a page as a browser's parser sees them: (text, classes, colour, label, score), the text outside
    labels and scores, and every tag opened."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.marks: list[dict] = []
        self.text, self.tags, self.inside, self.rows = "", [], [], []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag not in VOID:
            self.inside.append((tag, attrs.get("class", "")))
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self.rows[-1].append("")
        if tag == "mark":
            colour = re.fullmatch(r"--colour: ?(.*?);?", attrs["style"]).group(1)
            self.marks.append({"text": "", "classes": attrs["class"].split(), "colour": colour, "label": "",
                               "score": "", **({"title": attrs["title"]} if "title" in attrs else {})})

    def handle_endtag(self, tag):
        assert self.inside.pop()[0] == tag

    def handle_data(self, data):
        if self.inside and self.inside[-1][0] in ("td", "th"):
            self.rows[-1][-1] += data
        where = [cls for tag, cls in self.inside if tag in ("mark", "span")]
        if self.inside and self.inside[-1][0] in ("style", "script", "title", "h1"):
            return
        if where and where[-1] in ("label", "score"):
            self.marks[-1][where[-1]] += data
        else:
            self.text += data
            if where and where[-1].startswith("entity"):
                self.marks[-1]["text"] += data

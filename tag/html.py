"""HTML for people: the page the server shows at GET /, self-contained (no asset from the internet)."""

from __future__ import annotations

import html
from collections.abc import Sequence

APP_SCRIPT = """
document.getElementById("tag").addEventListener("click", async () => {
  const out = document.getElementById("entities");
  out.replaceChildren();
  const headers = {"Content-Type": "application/json"};
  const token = document.getElementById("token").value;
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch("/v1/tag", {method: "POST", headers: headers,
    body: JSON.stringify({texts: [document.getElementById("text").value]})});
  const answer = await response.json();
  if (!response.ok) {
    out.append(Object.assign(document.createElement("li"), {textContent: answer.error.message}));
    return;
  }
  for (const e of answer.results[0].entities) {
    out.append(Object.assign(document.createElement("li"),
      {textContent: e.type + ": " + e.text + " (" + e.score.toFixed(2) + ")"}));
  }
});
"""


def app_page(types: Sequence[str]) -> str:
    """The page GET / serves: paste a text, see its entities with type and score. User text only ever reaches the
    page as textContent, never as markup."""
    names = ", ".join(html.escape(t) for t in types)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>llama-ner</title></head>
<body>
<h1>llama-ner</h1>
<p>Entity types: {names}</p>
<textarea id="text" rows="6" cols="80"></textarea>
<p><label>Token (if the server asks for one) <input id="token" type="password"></label>
<button id="tag">Tag</button></p>
<ul id="entities"></ul>
<script>{APP_SCRIPT}</script>
</body></html>
"""

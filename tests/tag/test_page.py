"""The page the server shows at GET /, driven in a real headless browser (Debian's chromium and chromedriver, through
selenium) against a real server process: a person pastes a text, clicks, and sees the entities the Python API finds,
highlighted as tag/html.py renders them; an error the server answers is shown as text. A machine without the browser
fails here with what to install: it never skips."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tag.html import render_entities, type_colours
from tag.tagger import load_tagger
from tests.tag.html_marks import Marks

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
BROWSER, DRIVER = "chromium", "chromedriver"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(random_run, tmp_path_factory) -> Iterator[str]:
    """`python -m tag.serve` on the random run, with a token, on a free port of 127.0.0.1; its URL once /health
    answers. Its output goes to a file (a pipe nobody reads could fill and stall it), shown if it fails to start."""
    port, log = free_port(), tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "tag.serve", "--run", str(random_run), "--port", str(port),
                                    "--device", "cpu", "--token", TOKEN], cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "health", timeout=1) as response:
                    assert json.load(response) == {"status": "ok"}
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not answer /health within 60 s:\n{log.read_text()}")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    browser, driver = shutil.which(BROWSER), shutil.which(DRIVER)
    if not browser or not driver:
        pytest.fail(f"the browser test needs Debian's chromium and its driver ({BROWSER}: {browser}, {DRIVER}: "
                    f"{driver}): `apt-get install -y chromium chromium-driver` (.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)  # no sandbox: CI runs as root, where chromium's sandbox cannot start
    chrome = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()


def tag_in_page(browser: webdriver.Chrome, text: str, token: str, typed: bool) -> str:
    """Put `text` in the box (typed key by key, or pasted: set at once, as a paste does; chromedriver types only
    characters of the Basic Multilingual Plane), the token, click, and wait: the state the page reached."""
    box, token_box = browser.find_element(By.ID, "text"), browser.find_element(By.ID, "token")
    box.clear()
    if typed:
        box.send_keys(text)
    else:
        browser.execute_script("arguments[0].value = arguments[1]", box, text)
    token_box.clear()
    token_box.send_keys(token)
    browser.find_element(By.ID, "tag").click()
    result = browser.find_element(By.ID, "result")
    WebDriverWait(browser, 10).until(lambda _: result.get_attribute("data-state") in ("done", "error"))
    return result.get_attribute("data-state")


COLOURS = """return Array.from(document.querySelectorAll(arguments[0])).map(
  m => [m.querySelector(".label").textContent, getComputedStyle(m).backgroundColor]);"""


def test_a_pasted_text_shows_the_entities_the_api_finds_highlighted_by_type(server, browser, random_run):
    tagger = load_tagger(random_run, device="cpu")
    browser.get(server)
    legend = dict(browser.execute_script(COLOURS, ".legend mark"))
    assert list(legend) == list(tagger.types) and len(set(legend.values())) == len(legend)
    texts = [("Peter Blackburn met EU officials in Brussels & <b>Ōsaka</b> on Monday .", True),
             ("😀 Angela Merkel visited Paris\nand Rome with 𝔑icolas Sarkozy .", False)]  # offsets in code points
    for text, typed in texts:
        assert tag_in_page(browser, text, TOKEN, typed) == "done"
        expected = tagger.tag([text])[0]
        assert expected, f"the random tagger should find entities in {text!r}"
        shown = Marks(browser.find_element(By.ID, "result").get_attribute("innerHTML"))
        assert shown.text == text  # the whole text, each entity in its place, nothing parsed as markup
        assert ("b", {}) not in shown.tags
        python = Marks(render_entities(text, expected, tagger.types)).marks
        for mark in (*shown.marks, *python):
            mark["title"] = float(mark["title"].removeprefix(mark["label"]))  # to compare at 1e-4: batches differ
        assert [{**m, "title": pytest.approx(m["title"], abs=1e-4)} for m in python] == shown.marks
        assert [m["colour"] for m in shown.marks] == [type_colours(tagger.types)[e.type] for e in expected]
        for kind, background in browser.execute_script(COLOURS, "#result mark"):
            assert background == legend[kind]  # the colour is drawn, the legend's for the type
    assert browser.find_element(By.ID, "error").text == ""


def test_an_error_answer_is_shown_as_text(server, browser):
    browser.get(server)
    assert tag_in_page(browser, "Peter Blackburn met EU officials .", TOKEN, True) == "done"
    assert tag_in_page(browser, "Peter Blackburn met EU officials .", "wrong-token", True) == "error"
    error = browser.find_element(By.ID, "error").text
    assert error.startswith("error: ") and "bearer token" in error
    assert browser.find_elements(By.CSS_SELECTOR, "#result mark") == []  # the entities of before are gone


def test_the_api_description_renders_without_the_internet(server, browser):
    """/docs is Swagger UI served by the server itself: its script and style come from the server, not a CDN (this
    machine reaches none), so the page lists the operations."""
    browser.get(server + "docs")
    WebDriverWait(browser, 20).until(lambda _: browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/v1/tag", "/v1/labels", "/health"} <= paths
    sources = browser.execute_script(
        "return Array.from(document.querySelectorAll('script[src], link[href]')).map(e => e.src || e.href)")
    assert sources and all(s.startswith(server) for s in sources)

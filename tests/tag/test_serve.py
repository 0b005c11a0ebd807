"""tag/serve.py: every endpoint and every error in process, then a real server process under load and stopped.

Answers are checked against the Python API (`EntityTagger.tag` / `tag_words`) on the same run: types, offsets and
text exactly, scores to 1e-4, since the server tags each text among other requests' texts and a batch of another
shape may change the last float bits of a matmul.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tag import load_tagger, serve
from tag.serve import Limits, create_app
from tag.tagger import Entity, EntityTagger

ROOT = Path(__file__).resolve().parents[2]

LONG = " ".join(f"Officials of the European Union met delegates from Brazil in Geneva on day {i} ." for i in range(20))
TEXTS = [
    "Peter Blackburn met officials of the European Commission in Brussels on Monday .",
    "",
    "   ",
    "Germany beat Russia 2-1 in Moscow",
    "U.S. President Bill Clinton flew to Tokyo .",
    "Jose\u0301 Mari\u0301a Aznar habló en Madrid con Angela Merkel.",  # decomposed accents: offsets index as given
    "Müller (Bayern München) schoß 2 Tore gegen Borussia Dortmund.",
    "東京で安倍晋三首相が記者会見を行った。",
    "وصل الرئيس إلى القاهرة يوم الاثنين",
    "Emoji 🎉 at the Olympics in Paris 2024 \U0001f1eb\U0001f1f7 !",
    "line one\nline two\twith a tab, and\r\nWindows breaks",
    LONG,  # several windows
    "?!",
]
WORDS = [["Peter", "Blackburn", "visited", "Brussels", "."], [], ["EU", "rejects", "German", "call"], ["ü"]]


@pytest.fixture(scope="module")
def tagger(random_run) -> EntityTagger:
    return load_tagger(random_run, device="cpu")


@pytest.fixture(scope="module")
def expected(tagger) -> dict[str, list[Entity]]:
    """The Python API's entities of every text, all tagged in one call."""
    assert len(LONG) > 4 * 256, "LONG is meant to need several windows"
    return dict(zip(TEXTS, tagger.tag(TEXTS)))


@contextlib.contextmanager
def serving(tagger: EntityTagger, token: str | None = None, cors: tuple[str, ...] = (), **limits) -> Iterator[
        TestClient]:
    with TestClient(create_app(tagger, Limits(**limits), token, cors)) as client:
        yield client


def assert_answers(results: list[dict], expected: list[list[Entity]]) -> None:
    """The server's results are the Python API's entities: exactly, but for scores to 1e-4."""
    assert len(results) == len(expected)
    for result, entities in zip(results, expected):
        assert list(result) == ["entities"]
        got = result["entities"]
        assert [{k: e[k] for k in ("type", "text", "start", "end")} for e in got] == [
            {"type": e.type, "text": e.text, "start": e.start, "end": e.end} for e in entities]
        assert [e["score"] for e in got] == pytest.approx([e.score for e in entities], abs=1e-4)
        assert all(list(e) == ["type", "text", "start", "end", "score"] for e in got)


def test_texts_and_words_are_answered_as_the_python_api_answers(tagger, expected):
    with serving(tagger) as client:
        response = client.post("/v1/tag", json={"texts": TEXTS})
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert_answers(response.json()["results"], [expected[t] for t in TEXTS])
        response = client.post("/v1/tag", json={"words": WORDS})
        assert response.status_code == 200
        assert_answers(response.json()["results"], tagger.tag_words(WORDS))
    assert expected[TEXTS[0]] and expected[LONG] and expected[""] == []  # the random head finds entities


def test_labels_health_page_and_openapi(tagger):
    with serving(tagger) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/v1/labels").json() == {"types": ["LOC", "MISC", "ORG", "PER"],
                                                   "labels": list(tagger.predictor.labels.labels)}
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "http://" not in page.text and "https://" not in page.text
        assert all(t in page.text for t in tagger.types)
        schema = client.get("/openapi.json").json()
        assert {"/v1/tag", "/v1/labels", "/health"} <= set(schema["paths"])
        docs = client.get("/docs")
        assert docs.status_code == 200 and not re.search(r'(src|href)="https?://', docs.text)  # nothing from a CDN
        redoc = client.get("/redoc")
        assert redoc.status_code == 200 and not re.search(r'(src|href)="https?://', redoc.text)
        missing = client.get("/v2/tag")
        assert missing.status_code == 404 and missing.json() == {"error": {"message": "Not Found", "field": None}}
        wrong = client.get("/v1/tag")
        assert wrong.status_code == 405 and wrong.json()["error"]["message"] == "Method Not Allowed"


BAD_REQUESTS = [  # body, status, field, message
    (b"", 400, "body", "the body is empty"),
    (b'{"texts": ["ok", "caf\xe9"]}', 400, "texts[1]",
     r"texts\[1\] is not UTF-8 text: character 3 \('\\udce9'\) is a byte that is not UTF-8"),
    (b'{"words": [["ok"], ["a", "\xff\xfe"]]}', 400, "words[1][1]", "is not UTF-8 text: character 0"),
    (b'{"texts": ["ok"]\xff}', 400, "body", "not JSON"),
    (b'{"texts": ["a",]}', 400, "body", "not JSON: .* line 1 column 16"),
    (b'["a", "b"]', 400, "body", "the body is a JSON array"),
    (b'{}', 400, "body", 'send either "texts" or "words"'),
    (b'{"texts": ["a"], "words": [["a"]]}', 400, "words", "not both"),
    (b'{"text": ["a"]}', 400, "text", "unknown field 'text'"),
    (b'{"texts": "a text"}', 400, "texts", "texts is a JSON string, not a list"),
    (b'{"texts": []}', 400, "texts", "texts is empty"),
    (b'{"texts": ["a", "b", 3]}', 400, "texts[2]", "texts\\[2\\] is a JSON number, not a string"),
    (b'{"texts": ["a", null]}', 400, "texts[1]", "texts\\[1\\] is a JSON null"),
    (b'{"texts": ["ok", "a\\ud800b"]}', 400, "texts[1]", r"texts\[1\] is not UTF-8 text: character 1 .* surrogate"),
    (b'{"words": []}', 400, "words", "words is empty"),
    (b'{"words": ["Peter", "Blackburn"]}', 400, "words[0]", "words\\[0\\] is a JSON string, not a list of words"),
    (b'{"words": [["a"], ["New York"]]}', 400, "words[1][0]", "'New York'.* is not a word"),
    (b'{"words": [["a", ""]]}', 400, "words[0][1]", "is not a word"),
    (b'{"words": [["a", 7]]}', 400, "words[0][1]", "is a JSON number, not a string"),
]


@pytest.mark.parametrize("body, status, field, message", BAD_REQUESTS)
def test_a_bad_request_gets_an_error_naming_the_field(tagger, body, status, field, message, monkeypatch):
    monkeypatch.setattr(tagger, "tag_prepared", lambda items: pytest.fail("a bad request reached the model"))
    with serving(tagger) as client:
        response = client.post("/v1/tag", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["field"] == field
    assert re.search(message, error["message"]), error["message"]


def test_input_over_a_limit_gets_413_naming_the_field(tagger, monkeypatch):
    monkeypatch.setattr(tagger, "tag_prepared", lambda items: pytest.fail("a bad request reached the model"))
    with serving(tagger, max_body_bytes=300, max_texts=3, max_chars=20) as client:
        cases = [
            ({"texts": ["a"] * 4}, "texts", "4 inputs, more than the limit of 3"),
            ({"texts": ["short", "x" * 21]}, "texts[1]", "21 characters, more than the limit of 20"),
            ({"words": [["ok"], ["abcdefghij", "abcdefghij"]]}, "words[1]", "21 characters joined by spaces"),
            ({"words": [["x" * 21]]}, "words[0][0]", "21 characters"),
            ({"texts": ["x" * 400]}, "body", "more than the limit of 300"),
        ]
        for body, field, message in cases:
            response = client.post("/v1/tag", json=body)
            assert response.status_code == 413, body
            assert response.json()["error"]["field"] == field and message in response.json()["error"]["message"]
        # A body sent in chunks, without a Content-Length, is cut off as soon as it is over.
        chunks = iter([b'{"texts": ["', b"x" * 200, b"x" * 200, b'"]}'])
        response = client.post("/v1/tag", content=chunks, headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and "more than the limit of 300 bytes" in response.json()["error"]["message"]


def test_a_token_guards_the_api_but_not_health_and_page(tagger):
    with serving(tagger, token="s3cret") as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"},
                        {"Authorization": "s3cret"}):
            for response in (client.post("/v1/tag", json={"texts": ["a"]}, headers=headers),
                             client.get("/v1/labels", headers=headers),
                             client.post("/v1/tag", content=b"not json", headers=headers)):
                assert response.status_code == 401, headers
                assert response.json()["error"]["field"] == "Authorization"
                assert response.headers["www-authenticate"] == "Bearer"
        good = {"Authorization": "Bearer s3cret"}
        assert client.post("/v1/tag", json={"texts": ["a"]}, headers=good).status_code == 200
        assert client.get("/v1/labels", headers=good).status_code == 200
        for path in ("/health", "/", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def test_no_cors_unless_an_origin_is_given(tagger):
    preflight = {"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    with serving(tagger) as client:
        assert "access-control-allow-origin" not in client.options("/v1/tag", headers=preflight).headers
        response = client.post("/v1/tag", json={"texts": ["a"]}, headers={"Origin": "http://elsewhere.test"})
        assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
    with serving(tagger, cors=("http://elsewhere.test",)) as client:
        allowed = client.options("/v1/tag", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://elsewhere.test"
        refused = client.options("/v1/tag", headers={**preflight, "Origin": "http://other.test"})
        assert "access-control-allow-origin" not in refused.headers


def concurrently(calls: list) -> list:
    """Run each call in its own thread, all released at once; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(tagger, expected, monkeypatch):
    calls = []
    tag_prepared = tagger.tag_prepared
    monkeypatch.setattr(tagger, "tag_prepared", lambda items: calls.append(len(items)) or tag_prepared(items))
    rng = random.Random(0)
    requests = [rng.sample(TEXTS[:-2], rng.randint(1, 4)) for _ in range(24)]
    with serving(tagger, max_wait_ms=300) as client:
        responses = concurrently([lambda texts=texts: client.post("/v1/tag", json={"texts": texts})
                                  for texts in requests])
    for texts, response in zip(requests, responses):
        assert response.status_code == 200
        assert_answers(response.json()["results"], [expected[t] for t in texts])
    assert sum(calls) == sum(map(len, requests)) and len(calls) <= len(requests) / 3, calls


def test_a_full_queue_answers_503_at_once(tagger, expected, monkeypatch):
    gate, entered = threading.Event(), threading.Event()
    tag_prepared = tagger.tag_prepared

    def held(items):
        entered.set()
        gate.wait()
        return tag_prepared(items)

    monkeypatch.setattr(tagger, "tag_prepared", held)
    answers: list = []
    with serving(tagger, max_queue=3, max_texts=3, max_wait_ms=1) as client:
        first = threading.Thread(target=lambda: answers.append(client.post("/v1/tag", json={"texts": TEXTS[:3]})))
        first.start()
        assert entered.wait(timeout=30)  # the first request is in the model call, which is held
        second = threading.Thread(target=lambda: answers.append(client.post("/v1/tag", json={"texts": TEXTS[3:5]})))
        second.start()
        while client.app.state.batcher.waiting_items < 2:
            time.sleep(0.001)
        full = client.post("/v1/tag", json={"texts": TEXTS[5:7]})  # would hang if it waited for the held call
        assert full.status_code == 503 and "the queue is full" in full.json()["error"]["message"]
        gate.set()
        first.join(timeout=30)
        second.join(timeout=30)
    assert sorted(len(a.json()["results"]) for a in answers) == [2, 3]


def test_a_failing_model_call_answers_500_in_json(tagger, monkeypatch):
    def broken(items):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tagger, "tag_prepared", broken)
    with TestClient(create_app(tagger, Limits()), raise_server_exceptions=False) as client:  # as uvicorn would
        response = client.post("/v1/tag", json={"texts": ["a"]})
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "tagging failed: RuntimeError: out of memory"


def test_command_line_errors_are_one_line_and_exit_2(random_run, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(serve.TOKEN_ENV, raising=False)
    assert serve.main(["--run", str(random_run), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --host 0.0.0.0 is reachable from other machines: give --token") and \
        err.count("\n") == 1
    assert serve.main(["--run", str(tmp_path), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path}/tagging.json: not a run directory") and err.count("\n") == 1
    for flags, message in ((["--max-texts", "0"], "argument --max-texts: '0' is not a positive number"),
                           (["--max-queue", "8"], "--max-queue 8 must hold one request of --max-texts 256"),
                           (["--token", ""], "the token (--token or $LLAMA_NER_TOKEN) is empty")):
        with pytest.raises(SystemExit) as exit_:
            serve.main(["--run", str(random_run), *flags])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real server process on 127.0.0.1 and a free port; its output collected line by line."""

    def __init__(self, command: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        # One torch thread: the tiny model's matmuls are too small to share, and on a busy machine more threads
        # only spin against the other processes.
        self.process = subprocess.Popen([*command, "--port", str(self.port)], cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        threading.Thread(target=self.collect, daemon=True).start()
        deadline = time.monotonic() + 120
        while not self.healthy():
            assert self.process.poll() is None and time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.1)

    def collect(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> int:
        """SIGTERM, and the exit code once the process ends."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def load(port: int, requests: list[list[str]], clients: int) -> dict[int, tuple[int, dict]]:
    """Every request sent once by one of `clients` threads, each on a keep-alive connection of its own (http.client:
    a light client, which leaves the CPU to the server); each request's status and answer by request index."""
    pending = iter(enumerate(requests))
    taking = threading.Lock()
    responses: dict[int, tuple[int, dict]] = {}

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with taking:
                i, texts = next(pending, (None, None))
            if i is None:
                break
            connection.request("POST", "/v1/tag", json.dumps({"texts": texts}), {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert i not in responses
            responses[i] = (response.status, json.loads(response.read()))
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return responses


def test_a_real_server_under_load_answers_every_request_as_the_api_then_stops(random_run, expected):
    rng = random.Random(1)
    requests = [rng.choices(TEXTS, k=rng.randint(1, 3)) for _ in range(2000)]
    server = Server([sys.executable, "-m", "tag.serve", "--run", str(random_run), "--device", "cpu"])
    try:
        responses = load(server.port, requests, clients=64)
        assert sorted(responses) == list(range(len(requests)))  # none lost, each answered once
        for i, texts in enumerate(requests):
            status, answer = responses[i]
            assert status == 200, answer
            assert_answers(answer["results"], [expected[t] for t in texts])
        assert server.stop() == 0, "".join(server.lines)
    finally:
        server.kill()
    assert not any("Traceback" in line for line in server.lines), "".join(server.lines)


SLOW_MODEL = """
import sys, time
from tag import serve, tagger
tag_prepared = tagger.EntityTagger.tag_prepared
def slow(self, items):
    print("model call:", len(items), "texts", flush=True)
    time.sleep(1.5)
    return tag_prepared(self, items)
tagger.EntityTagger.tag_prepared = slow
sys.exit(serve.main(sys.argv[1:]))
"""


def test_a_stopped_server_answers_the_requests_in_flight_first(random_run, expected):
    """SIGTERM while the model tags six requests (held 1.5 s in a model call by the test's wrapper): every one is
    answered, then the process exits 0, and it takes no new request meanwhile."""
    server = Server([sys.executable, "-c", SLOW_MODEL, "--run", str(random_run), "--device", "cpu",
                     "--max-wait-ms", "1000"])
    try:
        requests = [TEXTS[i:i + 2] for i in range(6)]
        with httpx.Client(base_url=server.url, timeout=60) as warm:
            assert warm.post("/v1/tag", json={"texts": ["warm"]}).status_code == 200
        responses: list = []
        senders = [threading.Thread(target=lambda texts=texts: responses.append(
            (texts, httpx.post(server.url + "/v1/tag", json={"texts": texts}, timeout=60)))) for texts in requests]
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 30
        while sum(int(line.split()[2]) for line in server.lines if line.startswith("model call:")) < 1 + 12:
            assert time.monotonic() < deadline, "".join(server.lines)
            time.sleep(0.01)
        server.process.send_signal(signal.SIGTERM)
        for sender in senders:
            sender.join(timeout=60)
        assert server.process.wait(timeout=60) == 0, "".join(server.lines)
    finally:
        server.kill()
    assert any("Waiting for connections to close" in line for line in server.lines)  # uvicorn: they were in flight
    assert len(responses) == len(requests)
    for texts, response in responses:
        assert response.status_code == 200
        assert_answers(response.json()["results"], [expected[t] for t in texts])

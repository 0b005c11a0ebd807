"""Serving speed: the HTTP service at 1, 8 and 64 concurrent clients against the Python API tagging the same texts
offline, one after the other on this machine, in one table.

    python -m bench.serve --run RUN_DIR --data FILE [--limit N]

Texts are the sentences of FILE (a CoNLL file: CoNLL-2003's valid.txt for docs/performance.md), each joined by
spaces and tagged alone:
  api, one call      `load_tagger(run).tag(texts)` in this process, after loading and a warm-up call;
  api, chunks of 64  `tag()` on 64 texts at a time, one chunk after the other (as tag.predict streams stdin);
  serve, N clients   `python -m tag.serve --run RUN_DIR --device DEVICE` as its own process on 127.0.0.1 (its
                     default limits and batching), and N clients in this process, threads each with a keep-alive
                     connection, each sending one text per POST /v1/tag and the next once it is answered.
Latency is a request's, from sending it to its answer parsed (p50 and p99); a chunk's for the chunks. Tokens are
each text's subword tokens and BOS, as the model reads it. Every answer of the service is checked against the
offline API's (types, offsets and text exactly, scores to 1e-4): a difference fails the benchmark. The clients share
the machine with the server, as a client on the same host would.
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from data.conll import read_conll
from tag import Entity, load_tagger

CLIENTS = (1, 8, 64)
CHUNK = 64


def same(answer: list[dict], entities: list[Entity]) -> bool:
    """The service's entities of a text are the API's: exactly, but for scores to 1e-4 (a batch of another shape
    may change the last float bits)."""
    return len(answer) == len(entities) and all(
        (a["type"], a["text"], a["start"], a["end"]) == (e.type, e.text, e.start, e.end)
        and abs(a["score"] - e.score) <= 1e-4 for a, e in zip(answer, entities))


def offline(run: Path, texts: list[str], device: str) -> tuple[dict[str, list[float]], list[list[Entity]], list[int]]:
    """Seconds of each offline way (the whole call, then each chunk), the entities, and each text's tokens."""
    tagger = load_tagger(run, device=device)
    tagger.tag(texts[:CHUNK])  # warm-up: first calls pay for allocation and kernel choice
    start = time.perf_counter()
    found = tagger.tag(texts)
    seconds = {"api, one call": [time.perf_counter() - start]}
    chunks = []
    for i in range(0, len(texts), CHUNK):
        start = time.perf_counter()
        tagger.tag(texts[i:i + CHUNK])
        chunks.append(time.perf_counter() - start)
    seconds[f"api, chunks of {CHUNK}"] = chunks
    tokenizer = tagger.predictor.tokenizer
    return seconds, found, [len(tokenizer.encode(" " + t, bos=False)) + 1 for t in texts]  # + BOS


def clients(port: int, texts: list[str], n: int) -> tuple[float, list[float], list[list[dict]]]:
    """`n` clients tag every text once, one per request: the wall seconds, each request's latency, the answers. Each
    client is a thread with a keep-alive connection of its own (http.client: a light client, which leaves the CPU to
    the server)."""
    pending = iter(enumerate(texts))
    taking = threading.Lock()
    latencies: list[float] = []
    answers: list[list[dict]] = [[] for _ in texts]

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with taking:
                i, text = next(pending, (None, None))
            if i is None:
                break
            sent = time.perf_counter()
            connection.request("POST", "/v1/tag", json.dumps({"texts": [text]}), {"Content-Type": "application/json"})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"text {i}: HTTP {response.status} {body.decode()}")
            answers[i] = json.loads(body)["results"][0]["entities"]
            latencies.append(time.perf_counter() - sent)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(n)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if len(latencies) != len(texts):
        raise RuntimeError(f"{len(texts) - len(latencies)} of {len(texts)} requests failed")
    return seconds, latencies, answers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def served(run: Path, texts: list[str], device: str) -> tuple[dict[str, tuple[float, list[float]]],
                                                                dict[int, list[list[dict]]]]:
    """The service's seconds and latencies, and its answers, at each number of clients; it is stopped with SIGTERM
    at the end and must exit 0."""
    port = free_port()
    times: dict[str, tuple[float, list[float]]] = {}
    answers: dict[int, list[list[dict]]] = {}
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen([sys.executable, "-m", "tag.serve", "--run", str(run), "--port", str(port),
                                   "--device", device], stdout=log, stderr=subprocess.STDOUT)
        try:
            while not healthy(port) and server.poll() is None:
                time.sleep(0.2)
            if server.poll() is None:
                clients(port, texts[:CHUNK], 8)  # warm-up
                for n in CLIENTS:
                    seconds, latencies, answers[n] = clients(port, texts, n)
                    times[f"serve, {n} client{'s' if n > 1 else ''}"] = (seconds, latencies)
                server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=120)
        finally:
            if server.poll() is None:
                server.kill()
        if code != 0:
            log.seek(0)
            raise RuntimeError(f"the server exited with {code}:\n{log.read()[-4000:]}")
    return times, answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--data", required=True, help="a CoNLL file: its sentences are the texts")
    parser.add_argument("--limit", type=int, help="only the first N sentences")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    texts = [" ".join(s.words) for s in read_conll(args.data)[: args.limit]]

    api, found, lengths = offline(args.run, texts, args.device)
    serve, answers = served(args.run, texts, args.device)
    tokens = sum(lengths)
    print(f"{len(texts)} texts from {args.data}, {tokens} tokens, {sum(map(len, found))} entities; device "
          f"{args.device}, {torch.get_num_threads()} threads")
    print(f"{'':18} {'seconds':>8} {'texts/s':>8} {'tokens/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    rows = {name: (sum(chunks), chunks) for name, chunks in api.items()} | serve
    for name, (seconds, latencies) in rows.items():
        p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
        print(f"{name:18} {seconds:8.2f} {len(texts) / seconds:8.1f} {tokens / seconds:9.0f} {p50:8.1f} {p99:8.1f}")
    ratio = rows["api, one call"][0] / rows[f"serve, {CLIENTS[-1]} clients"][0]
    print(f"serve at {CLIENTS[-1]} clients / api in one call, tokens/s: {ratio:.2f}x (target: at least 0.8x)")
    wrong = {n: sum(not same(a, e) for a, e in zip(answers[n], found)) for n in CLIENTS}
    equal = ", ".join(f"{len(texts) - w} of {len(texts)} at {n}" for n, w in wrong.items())
    print(f"answers of the service equal to the API's: {equal} clients")
    return 1 if any(wrong.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

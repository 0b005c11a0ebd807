"""An HTTP tagging service: one trained run in memory, the texts of concurrent requests tagged together.

    python -m tag.serve --run RUN_DIR [--host 127.0.0.1] [--port 8000] [--token TOKEN]
    curl -s localhost:8000/v1/tag -H 'Content-Type: application/json' -d '{"texts": ["Angela Merkel visited Paris ."]}'

POST /v1/tag takes {"texts": [text, ...]} or {"words": [[word, ...], ...]} and answers {"results": [{"entities":
[...]}, ...]}, one result per input in input order, each entity what the Python API (tag/tagger.py) gives: type,
text, start, end, score. GET /v1/labels gives the run's types and labels, GET /health {"status": "ok"}, GET / a page
to try it in a browser, /docs (or /redoc) and /openapi.json the API's description, all served without the internet.

Every input is checked before any is tagged; a bad request gets {"error": {"message", "field"}} naming the field and
index (`texts[3]`, `words[2][5]`): 400 for a body that is not UTF-8, not JSON or not of this shape, 413 for one over
a limit, 401 for a missing or wrong token, 503 at once when the queue is full. Requests are tagged by tag/batcher.py.
With a token (--token, or the LLAMA_NER_TOKEN environment variable, which `ps` does not show) /v1/* asks for
`Authorization: Bearer TOKEN`; /health, the page and the API's description do not (they show no data and run no
model; the page sends the token its user types). It listens on 127.0.0.1 unless told otherwise, and any other
address needs a token. No CORS headers unless --cors-origin names the origins.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import ipaddress
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from tag.batcher import Batcher, QueueFull
from tag.html import app_page
from tag.tagger import EntityTagger, Prepared, is_word, load_tagger

TOKEN_ENV = "LLAMA_NER_TOKEN"
CHARS_PER_TOKEN = 4  # a rough mean for English subwords: the batch budget is estimated from characters
PAGE_POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"


@dataclass(frozen=True)
class Limits:
    """What one request may hold, and how requests queue and gather."""

    max_body_bytes: int = 1 << 20
    max_texts: int = 256  # texts (or word lists) per request
    max_chars: int = 100_000  # per text (words: joined by spaces); a long text is windowed as the API does
    max_queue: int = 4096  # texts waiting to be tagged; one more is answered 503 at once
    batch_tokens: int = 2048  # estimated tokens gathered into one model call (main: the predictor's max_tokens)
    max_wait_ms: float = 5.0  # how long the first text waits for others to gather with


class ApiError(Exception):
    """A request the service will not tag: the HTTP status, and the field (`texts[3]`) it is about."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class Entity(BaseModel):
    type: str
    text: str
    start: int
    end: int
    score: float


class Result(BaseModel):
    entities: list[Entity]


class TagResponse(BaseModel):
    results: list[Result]


class TagRequest(BaseModel):
    """Exactly one of the two."""

    texts: list[str] | None = None
    words: list[list[str]] | None = None


class Labels(BaseModel):
    types: list[str]
    labels: list[str]


def json_type(value: object) -> str:
    """What JSON calls the type of a parsed value."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), "null")


def error_response(status: int, message: str, field: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"message": message, "field": field}}, status_code=status, headers=headers)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over `max_bytes`, whatever its Content-Length says."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"the body has {declared} bytes, more than the limit of {max_bytes}", "body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, f"the body has more than the limit of {max_bytes} bytes", "body")
    return bytes(body)


def parse_body(body: bytes) -> dict:
    """The JSON object of a body, or a 400 saying why not. A byte that is not UTF-8 becomes an unpaired surrogate
    (surrogateescape): in a string, the check of that string (checked_text) names its field; elsewhere it is not
    JSON."""
    if not body:
        raise ApiError(400, 'the body is empty; send {"texts": [...]} or {"words": [[...]]}', "body")
    text = body.decode("utf-8", errors="surrogateescape")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(400, f"the body is not JSON: {e.msg} at line {e.lineno} column {e.colno}", "body") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, f'the body is a JSON {json_type(parsed)}; send {{"texts": [...]}} or '
                       '{"words": [[...]]}', "body")
    return parsed


def checked_text(text: object, field: str, limits: Limits) -> str:
    """A string within the character limit, all of it UTF-8: neither an undecodable byte nor an unpaired surrogate
    (which a JSON escape such as \\ud800 can write)."""
    if not isinstance(text, str):
        raise ApiError(400, f"{field} is a JSON {json_type(text)}, not a string", field)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, f"{field} is not UTF-8 text: character {e.start} ({text[e.start]!r}) is a byte that is "
                       "not UTF-8 or an unpaired surrogate", field) from None
    if len(text) > limits.max_chars:
        raise ApiError(413, f"{field} has {len(text)} characters, more than the limit of {limits.max_chars}", field)
    return text


def checked_words(words: object, field: str, limits: Limits) -> list[str]:
    """A list of words as tag_words takes them, within the character limit once joined by spaces."""
    if not isinstance(words, list):
        raise ApiError(400, f"{field} is a JSON {json_type(words)}, not a list of words", field)
    for w, word in enumerate(words):
        checked_text(word, f"{field}[{w}]", limits)
        if not is_word(word):
            raise ApiError(400, f"{field}[{w}] ({word!r}) is not a word: a non-empty string without whitespace",
                           f"{field}[{w}]")
    if (length := sum(map(len, words)) + max(len(words) - 1, 0)) > limits.max_chars:
        raise ApiError(413, f"{field} has {length} characters joined by spaces, more than the limit of "
                       f"{limits.max_chars}", field)
    return words


def parse_inputs(body: dict, limits: Limits) -> list[str | list[str]]:
    """The texts (strings) or word lists of a request body, each checked; the first problem is a 4xx ApiError."""
    unknown = sorted(set(body) - {"texts", "words"})
    if unknown:
        raise ApiError(400, f'unknown field {unknown[0]!r}: send {{"texts": [...]}} or {{"words": [[...]]}}',
                       unknown[0])
    if len(body) != 1:
        raise ApiError(400, 'send either "texts" or "words"' + (", not both" if body else ""),
                       "words" if body else "body")
    (field, inputs), = body.items()
    if not isinstance(inputs, list):
        raise ApiError(400, f"{field} is a JSON {json_type(inputs)}, not a list", field)
    if not inputs:
        raise ApiError(400, f"{field} is empty: nothing to tag", field)
    if len(inputs) > limits.max_texts:
        raise ApiError(413, f"{field} holds {len(inputs)} inputs, more than the limit of {limits.max_texts}", field)
    check = checked_text if field == "texts" else checked_words
    return [check(item, f"{field}[{i}]", limits) for i, item in enumerate(inputs)]


def prepare(item: str | list[str]) -> Prepared:
    return Prepared.from_text(item) if isinstance(item, str) else Prepared.from_words(item)


def estimated_tokens(item: str | list[str]) -> int:
    length = len(item) if isinstance(item, str) else sum(len(word) + 1 for word in item)
    return 1 + length // CHARS_PER_TOKEN


def bearer_check(token: str) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A dependency that refuses (401) a request without `Authorization: Bearer <token>`; in constant time."""
    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(HTTPBearer(auto_error=False))) -> None:
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise ApiError(401, "missing or wrong bearer token: send the header 'Authorization: Bearer TOKEN'",
                           "Authorization")
    return authorized


def create_app(tagger: EntityTagger, limits: Limits, token: str | None = None, cors: tuple[str, ...] = ()
               ) -> FastAPI:
    """The service around a loaded tagger. Its batcher runs while the app's lifespan does (uvicorn, TestClient)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.batcher = Batcher(lambda items: tagger.tag_prepared([prepare(item) for item in items]),
                                    estimated_tokens, limits.batch_tokens, limits.max_wait_ms / 1000,
                                    limits.max_queue)
        app.state.batcher.start()
        yield
        await app.state.batcher.close()  # uvicorn has answered the requests in flight; nothing is left to drop

    # FastAPIOffline: FastAPI whose /docs and /redoc load Swagger UI and ReDoc from this server, not from a CDN, so
    # the API's description shows on a machine without the internet.
    app = FastAPIOffline(title="llama-ner", summary="Named entities in text, from a fine-tuned LLaMA",
                         lifespan=lifespan)
    if cors:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    app.add_exception_handler(ApiError, lambda request, e: error_response(e.status, e.message, e.field))
    app.add_exception_handler(HTTPException, lambda request, e: error_response(e.status_code, str(e.detail)))
    app.add_exception_handler(Exception, lambda request, e: error_response(
        500, f"tagging failed: {type(e).__name__}: {e}"))
    protected = [Depends(bearer_check(token))] if token is not None else []

    @app.post("/v1/tag", response_model=TagResponse, dependencies=protected, openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": TagRequest.model_json_schema()}}}})
    async def tag(request: Request) -> JSONResponse:
        """The entities of each text (or word list), in input order."""
        inputs = parse_inputs(parse_body(await read_body(request, limits.max_body_bytes)), limits)
        try:
            found = await request.app.state.batcher.submit(inputs)
        except QueueFull as e:
            raise ApiError(503, f"{e}; try again later") from None
        return JSONResponse({"results": [{"entities": [vars(e) for e in entities]} for entities in found]})

    @app.get("/v1/labels", response_model=Labels, dependencies=protected)
    async def labels() -> dict:
        """The entity types the run finds, and its labels in the head's order."""
        return {"types": list(tagger.types), "labels": list(tagger.predictor.labels.labels)}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(app_page(tagger.types), headers={"Content-Security-Policy": PAGE_POLICY})

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: a number above zero."""
    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if number <= 0:
            raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
        return number
    return parse


def main(argv: list[str] | None = None) -> int:
    default = Limits()
    parser = argparse.ArgumentParser(
        prog="python -m tag.serve", description=__doc__.split("\n\n")[0],
        epilog="A request over a limit gets 413, a malformed one 400, both naming the field and index (texts[3]); a "
               "full queue 503 at once. SIGTERM or Ctrl-C answers the requests in flight, then exits 0.")
    parser.add_argument("--run", required=True, help="run directory written by `python -m train`")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1); any other than loopback needs a token")
    parser.add_argument("--port", type=int, default=8000, help="default: 8000")
    parser.add_argument("--token", help=f"require 'Authorization: Bearer TOKEN' on /v1/* (default: ${TOKEN_ENV}, which ps does "
                             "not show)")
    parser.add_argument("--max-body-bytes", type=positive(int), default=default.max_body_bytes,
                        help=f"bytes per request body (default: {default.max_body_bytes})")
    parser.add_argument("--max-texts", type=positive(int), default=default.max_texts,
                        help=f"texts or word lists per request (default: {default.max_texts})")
    parser.add_argument("--max-chars", type=positive(int), default=default.max_chars,
                        help=f"characters per text, words joined by spaces (default: {default.max_chars})")
    parser.add_argument("--max-queue", type=positive(int), default=default.max_queue,
                        help=f"texts waiting to be tagged; more get 503 at once (default: {default.max_queue})")
    parser.add_argument("--batch-tokens", type=positive(int),
                        help="tokens, estimated from characters, gathered into one model call (default: the "
                             "run's max_tokens, else the device's, one forward pass)")
    parser.add_argument("--max-wait-ms", type=positive(float), default=default.max_wait_ms,
                        help="how long a text waits for others to be tagged with (default: "
                             f"{default.max_wait_ms:g})")
    parser.add_argument("--cors-origin", nargs="+", default=[], metavar="ORIGIN",
                        help="origins a browser may call the API from (default: none)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction,
                        help="int8 matmuls on a CPU with VNNI or AMX (tag/quantize.py); default: off")
    args = parser.parse_args(argv)
    if args.max_queue < args.max_texts:
        parser.error(f"--max-queue {args.max_queue} must hold one request of --max-texts {args.max_texts}")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    if token == "":
        parser.error(f"the token (--token or ${TOKEN_ENV}) is empty")
    if token is None and not is_loopback(args.host):
        print(f"error: --host {args.host} is reachable from other machines: give --token (or ${TOKEN_ENV}) so that "
              "only its holders can tag", file=sys.stderr)
        return 2
    try:
        tagger = load_tagger(args.run, device=args.device, int8=args.int8)
    except (OSError, ValueError) as e:  # errors name the file, or the setting
        print(f"error: {e}", file=sys.stderr)
        return 2
    limits = Limits(args.max_body_bytes, args.max_texts, args.max_chars, args.max_queue,
                    args.batch_tokens or tagger.predictor.max_tokens, args.max_wait_ms)
    app = create_app(tagger, limits, token, tuple(args.cors_origin))
    # uvicorn stops on SIGINT or SIGTERM once the requests in flight are answered, then raises the signal again to
    # end the process by it. Both end here as KeyboardInterrupt: a stop that was asked for exits 0, no traceback.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host=args.host, port=args.port, timeout_graceful_shutdown=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

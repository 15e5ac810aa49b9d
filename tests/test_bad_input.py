"""Bad input, one kind per test, against the gateway in process: each is answered with a clear 4xx in OpenAI's
error shape within a time bound (a hang is what is caught here, not slowness), nothing reaches an upstream, and no
traceback reaches the client or the log. What needs a socket (slow and stopped uploads, bytes that are not HTTP, a
declared length, clients that leave) is in ``tests/test_bad_input_socket.py``, against ``minigate serve``.

The usage rule: a request refused before it is routed (bad key, bad body, unknown model) has no usage row, as
nothing was served; one the gateway routed has a row whatever its outcome, so an upstream's refusal is kept.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from minigate.gateway.core.wire import MAX_MESSAGES, MAX_N, MAX_TOKENS
from tests.conftest import two_provider_config
from tests.fakes.upstream import FakeUpstream, Status
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

BOUND = 5.0  # seconds: far above any honest answer, far below a hang
BODY_TIMEOUT = 1.5  # server.body_timeout in these tests
HEADERS = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
HELLO = [{"role": "user", "content": "hi"}]


def served_config(upstreams: tuple[FakeUpstream, FakeUpstream]) -> dict[str, Any]:
    """The two upstreams, with a short body deadline (and a long shutdown grace: a stuck task would show)."""
    config = two_provider_config(*upstreams)
    config["server"] = {"body_timeout": BODY_TIMEOUT, "shutdown_grace": 20}
    return config


@pytest.fixture(scope="module")
def served(
    upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessGateway]:
    """One gateway for the module, in process."""
    with InProcessGateway(served_config(upstreams), tmp_path_factory.mktemp("bad")) as server:
        yield server


@pytest.fixture
def quiet(
    served: InProcessGateway, upstreams: tuple[FakeUpstream, FakeUpstream], caplog: pytest.LogCaptureFixture
) -> Iterator[InProcessGateway]:
    """The gateway; the test's requests must leave no usage row, no upstream request and no error in the log."""
    caplog.set_level(logging.INFO)  # what `minigate serve` logs (server.log_level "info")
    for fake in upstreams:
        fake.reset()
    rows = len(served.rows())
    yield served
    assert len(served.rows()) == rows, "a refused request stored a usage row"
    assert not [r for fake in upstreams for r in fake.requests], "a refused request reached an upstream"
    assert "Traceback" not in caplog.text
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, errors


def _post(served: InProcessGateway, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    started = time.monotonic()
    r = served.http.post(f"/v1{path}", content=content, headers=headers or HEADERS, timeout=BOUND * 2)
    assert time.monotonic() - started < BOUND, "the answer took too long"
    return r


ANY = object()  # any param


def _error(r: httpx.Response, status: int, param: object = None, *words: str) -> dict[str, Any]:
    """The OpenAI error object of ``r``, checked: status, shape, ``param``, and words the message must hold."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and param in (ANY, error["param"]), error
    assert error["type"] == "invalid_request_error" and "Traceback" not in r.text
    for word in words:
        assert word in error["message"], (word, error["message"])
    return error


def chat_body(**fields: Any) -> bytes:
    return json.dumps({"model": "default", "messages": HELLO, **fields}).encode()


def test_body_over_the_size_limit(quiet: InProcessGateway) -> None:
    big = chat_body(user="x" * (9 << 20))
    _error(_post(quiet, "/chat/completions", big), 413, None, "too large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds for a chunked body too
        for _ in range(9):
            yield b" " * (1 << 20)

    started = time.monotonic()
    r = quiet.http.post("/v1/chat/completions", content=chunks(), headers=HEADERS, timeout=BOUND * 2)
    assert time.monotonic() - started < BOUND
    _error(r, 413, None, "too large")


def test_deeply_nested_json(quiet: InProcessGateway) -> None:
    depth = 100_000
    _error(_post(quiet, "/chat/completions", b"[" * depth + b"]" * depth), 400, None, "nested too deeply")
    inside = b'{"model": "default", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    _error(_post(quiet, "/chat/completions", inside), 400, None, "nested too deeply")
    unclosed = b'{"model": "default", "messages": [{"role": "user", "content": ' + b'{"a":' * depth
    _error(_post(quiet, "/embeddings", unclosed), 400, None)


def test_100000_messages(quiet: InProcessGateway) -> None:
    body = chat_body(messages=[{"role": "user", "content": "x"}] * 100_000)
    _error(_post(quiet, "/chat/completions", body), 400, "messages", str(MAX_MESSAGES))
    inputs = json.dumps({"model": "backup/embedder", "input": ["x"] * 100_000}).encode()
    _error(_post(quiet, "/embeddings", inputs), 400, "input")


WRONG_TYPES = [
    ("model", 7),
    ("model", ""),
    ("messages", "hi"),
    ("messages", {"role": "user"}),
    ("messages", [{"role": "robot", "content": "x"}]),
    ("messages", [{"role": "user", "content": 5}]),
    ("messages", [{"role": "user", "content": "x", "name": 1}]),
    ("max_tokens", "100"),
    ("max_tokens", 1.5),
    ("max_completion_tokens", True),
    ("temperature", "hot"),
    ("top_p", [1]),
    ("n", "2"),
    ("stream", "yes"),
    ("stream_options", "usage"),
    ("stream_options", {"include_usage": "yes"}),
    ("stop", 5),
    ("stop", [1, 2]),
    ("presence_penalty", "x"),
    ("frequency_penalty", {}),
    ("logit_bias", [1]),
    ("logit_bias", {"50256": "never"}),
    ("seed", "seven"),
    ("user", 1),
    ("logprobs", "yes"),
    ("top_logprobs", "5"),
    ("tools", {"type": "function"}),
    ("tool_choice", 1),
    ("parallel_tool_calls", "no"),
    ("response_format", "json"),
]


@pytest.mark.parametrize(("field", "value"), WRONG_TYPES, ids=[f"{f}={v!r}"[:40] for f, v in WRONG_TYPES])
def test_wrong_type_in_a_chat_field(quiet: InProcessGateway, field: str, value: Any) -> None:
    error = _error(_post(quiet, "/chat/completions", chat_body(**{field: value})), 400, ANY)
    assert error["param"] is not None and error["param"].startswith(field), error
    assert f"'{error['param']}'" in error["message"] and error["code"] == "invalid_value"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/completions", {"model": "default", "prompt": {"text": "x"}}, "prompt"),
        ("/completions", {"model": "default", "prompt": "x", "echo": "yes"}, "echo"),
        ("/completions", {"model": "default", "prompt": "x", "best_of": 0}, "best_of"),
        ("/embeddings", {"model": "default", "input": 5}, "input"),
        ("/embeddings", {"model": "default", "input": "x", "encoding_format": "png"}, "encoding_format"),
        ("/embeddings", {"model": "default", "input": "x", "dimensions": "8"}, "dimensions"),
    ],
)
def test_wrong_type_in_other_bodies(quiet: InProcessGateway, path: str, body: dict[str, Any], param: str) -> None:
    _error(_post(quiet, path, json.dumps(body).encode()), 400, param, f"'{param}'")


@pytest.mark.parametrize("path", ["/completions", "/embeddings"])
def test_unknown_model(quiet: InProcessGateway, path: str) -> None:
    body = {"model": "no-such-model", "prompt": "x", "input": "x"}
    error = _error(_post(quiet, path, json.dumps(body).encode()), 404, "model", "'no-such-model'", "/v1/models")
    assert error["code"] == "model_not_found"


def test_a_model_id_that_is_a_slash(quiet: InProcessGateway) -> None:
    r = quiet.http.get("/v1/models/%2F", headers=HEADERS, timeout=BOUND)
    assert _error(r, 404, "model")["code"] == "model_not_found"
    assert quiet.http.get("/v1/models/", headers=HEADERS, timeout=BOUND).json()["object"] == "list"


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("max_tokens", 2**31, MAX_TOKENS),
        ("max_tokens", 2**64, MAX_TOKENS),
        ("max_tokens", 10**40, MAX_TOKENS),
        ("max_tokens", 0, 1),
        ("max_tokens", -1, 1),
        ("max_completion_tokens", 2**31, MAX_TOKENS),
        ("n", MAX_N + 1, MAX_N),
        ("n", 10**9, MAX_N),
        ("n", 0, 1),
        ("seed", 2**64, (1 << 63) - 1),
        ("temperature", 1e308, 2),
    ],
)
def test_limits_far_beyond(quiet: InProcessGateway, field: str, value: int, limit: int) -> None:
    """The message names the field and the limit it broke (in msgspec's words around them, which may change)."""
    error = _error(_post(quiet, "/chat/completions", chat_body(**{field: value})), 400, field, f"'{field}'")
    assert re.search(rf"(?<![0-9]){limit}(?![0-9])", error["message"].removeprefix(f"Invalid value for '{field}'")), (
        error
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "default", "messages": [{"role": "user", "content": "caf\xe9"}]}',  # Latin-1, not UTF-8
        b'{"model": "default", "messages": [{"role": "user", "content": "\xc0\xaf"}]}',  # an overlong "/"
        b'{"model": "def\xffault", "messages": []}',
        b'{"\xfe": 1, "model": "default", "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "default", "messages": [{"role": "user", "content": "\\ud800"}]}',  # a lone surrogate
    ],
)
def test_invalid_utf8(quiet: InProcessGateway, raw: bytes) -> None:
    error = _error(_post(quiet, "/chat/completions", raw), 400, ANY)
    assert "UTF-8" in error["message"] or "not valid JSON" in error["message"], error


def test_admin_refusals(quiet: InProcessGateway) -> None:
    for path in ("/admin/reload", "/admin/api/models/local/pull", "/admin/api/models/x/y/load"):
        r = quiet.http.post(path, content=b"\xff" * 10, headers={"authorization": "Bearer wrong"}, timeout=BOUND)
        assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = quiet.http.post("/admin/api/models/primary/pull", content=b"[" * 100_000, headers=HEADERS, timeout=BOUND)
    assert r.status_code == 400 and r.json()["error"]["code"] == "not_manageable"


def test_routed_requests_keep_their_row_when_upstream_refuses(
    served: InProcessGateway, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    primary, _ = upstreams
    primary.reset()
    before = len(served.rows())
    refusal = {"message": "temperature and top_p conflict", "type": "invalid_request_error", "param": "top_p"}
    primary.script(Status(400, error=refusal))
    r = _post(served, "/chat/completions", chat_body(top_p=0.5, temperature=0.5))
    error = _error(r, 400, "top_p", "conflict")
    assert error["message"] == refusal["message"]
    rows = served.rows()[before:]
    assert [(row["status"], row["provider"] or "primary") for row in rows] == [(400, "primary")], rows

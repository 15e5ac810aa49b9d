"""Bad input, one kind per test, against a real ``minigate serve`` process: each is answered with a clear 4xx
in OpenAI's error shape within a time bound (a hang is what is caught here, not slowness), nothing reaches an
upstream, and no traceback reaches the client or the log.

The usage rule: a request refused before it is routed (bad key, bad body, unknown model) has no usage row, as
nothing was served; one the gateway routed has a row whatever its outcome, so an upstream's refusal is kept.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.core.wire import MAX_MESSAGES, MAX_N, MAX_TOKENS
from tests.conftest import two_provider_config
from tests.fakes.upstream import FakeUpstream, Status
from tests.gateway_server import ADMIN_KEY
from tests.serve_process import ServeProcess

BOUND = 5.0  # seconds: far above any honest answer, far below a hang
BODY_TIMEOUT = 1.5  # server.body_timeout in these tests
HEADERS = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
HELLO = [{"role": "user", "content": "hi"}]


def _config(upstreams: tuple[FakeUpstream, FakeUpstream]) -> dict[str, Any]:
    config = two_provider_config(*upstreams)
    config["server"] = {"body_timeout": BODY_TIMEOUT, "shutdown_grace": 20}
    return config


@pytest.fixture(scope="module")
def served(
    upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """One gateway process for the module."""
    with ServeProcess(_config(upstreams), tmp_path_factory.mktemp("bad")) as server:
        yield server


@pytest.fixture
def quiet(served: ServeProcess, upstreams: tuple[FakeUpstream, FakeUpstream]) -> Iterator[ServeProcess]:
    """The gateway; the test's requests must leave no usage row, no upstream request and no error in the log."""
    for fake in upstreams:
        fake.reset()
    rows, log = len(served.rows()), len(served.log_text())
    yield served
    assert len(served.rows()) == rows, "a refused request stored a usage row"
    assert not [r for fake in upstreams for r in fake.requests], "a refused request reached an upstream"
    _assert_clean_log(served.log_text()[log:])


def _assert_clean_log(text: str) -> None:
    assert "Traceback" not in text
    # Split on newlines only: a logged path may hold U+2028, which str.splitlines() splits on.
    records = [json.loads(line) for line in text.split("\n") if line.strip()]
    assert not [r for r in records if r.get("level") in ("ERROR", "CRITICAL")], records


def _post(served: ServeProcess, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    started = time.monotonic()
    r = httpx.post(f"{served.url}{path}", content=content, headers=headers or HEADERS, timeout=BOUND * 2)
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


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": "default", "messages": HELLO, **fields}).encode()


def test_body_over_the_size_limit(quiet: ServeProcess) -> None:
    big = _chat(user="x" * (9 << 20))
    _error(_post(quiet, "/chat/completions", big), 413, None, "too large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds for a chunked body too
        for _ in range(9):
            yield b" " * (1 << 20)

    started = time.monotonic()
    r = httpx.post(f"{quiet.url}/chat/completions", content=chunks(), headers=HEADERS, timeout=BOUND * 2)
    assert time.monotonic() - started < BOUND
    _error(r, 413, None, "too large")
    # A declared length over the limit is refused at once, without waiting for a body that never comes.
    answer = _raw(quiet.port, _head(1 << 30), [], pause=0)
    assert answer.startswith(b"HTTP/1.1 413") and b'"error"' in answer


def test_deeply_nested_json(quiet: ServeProcess) -> None:
    depth = 100_000
    _error(_post(quiet, "/chat/completions", b"[" * depth + b"]" * depth), 400, None, "nested too deeply")
    inside = b'{"model": "default", "messages": ' + b"[" * depth + b"]" * depth + b"}"
    _error(_post(quiet, "/chat/completions", inside), 400, None, "nested too deeply")
    unclosed = b'{"model": "default", "messages": [{"role": "user", "content": ' + b'{"a":' * depth
    _error(_post(quiet, "/embeddings", unclosed), 400, None)


def test_100000_messages(quiet: ServeProcess) -> None:
    body = _chat(messages=[{"role": "user", "content": "x"}] * 100_000)
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
def test_wrong_type_in_a_chat_field(quiet: ServeProcess, field: str, value: Any) -> None:
    error = _error(_post(quiet, "/chat/completions", _chat(**{field: value})), 400, ANY)
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
def test_wrong_type_in_other_bodies(quiet: ServeProcess, path: str, body: dict[str, Any], param: str) -> None:
    _error(_post(quiet, path, json.dumps(body).encode()), 400, param, f"'{param}'")


@pytest.mark.parametrize("path", ["/completions", "/embeddings"])
def test_unknown_model(quiet: ServeProcess, path: str) -> None:
    body = {"model": "no-such-model", "prompt": "x", "input": "x"}
    error = _error(_post(quiet, path, json.dumps(body).encode()), 404, "model", "'no-such-model'", "/v1/models")
    assert error["code"] == "model_not_found"


def test_a_model_id_that_is_a_slash(quiet: ServeProcess) -> None:
    r = httpx.get(f"{quiet.url}/models/%2F", headers=HEADERS, timeout=BOUND)
    assert _error(r, 404, "model")["code"] == "model_not_found"
    assert httpx.get(f"{quiet.url}/models/", headers=HEADERS, timeout=BOUND).json()["object"] == "list"


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
def test_limits_far_beyond(quiet: ServeProcess, field: str, value: int, limit: int) -> None:
    """The message names the field and the limit it broke (in msgspec's words around them, which may change)."""
    error = _error(_post(quiet, "/chat/completions", _chat(**{field: value})), 400, field, f"'{field}'")
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
def test_invalid_utf8(quiet: ServeProcess, raw: bytes) -> None:
    error = _error(_post(quiet, "/chat/completions", raw), 400, ANY)
    assert "UTF-8" in error["message"] or "not valid JSON" in error["message"], error


def _head(length: int, path: str = "/v1/chat/completions") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _raw(port: int, head: bytes, parts: list[bytes], pause: float, limit: float = BOUND * 2) -> bytes:
    """Send ``head`` then ``parts`` ``pause`` s apart (stopping early if the gateway answers); the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        answer, deadline = b"", time.monotonic() + limit
        for part in [*parts, None]:
            end = time.monotonic() + pause
            while time.monotonic() < min(end, deadline) or part is None:
                try:
                    got = sock.recv(65536)
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return answer
                    time.sleep(0.02)
                    continue
                except ConnectionError:
                    return answer
                if not got:
                    return answer  # the gateway closed the connection
                answer += got
            if part is not None:
                try:
                    sock.sendall(part)
                except (BlockingIOError, ConnectionError):
                    return answer
        return answer


def test_slow_loris_upload_gets_408_and_others_are_served(quiet: ServeProcess) -> None:
    body = _chat()
    started = time.monotonic()
    # One byte every 0.2 s: the whole body would take minutes; the deadline ends it after BODY_TIMEOUT.
    trickle = _raw(quiet.port, _head(len(body)), [body[i : i + 1] for i in range(len(body))], pause=0.2)
    took = time.monotonic() - started
    assert trickle.startswith(b"HTTP/1.1 408"), trickle[:200]
    assert BODY_TIMEOUT - 0.1 < took < BODY_TIMEOUT + 2, took
    head, _, payload = trickle.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert json.loads(payload)["error"]["code"] == "request_timeout"
    # A client that stops after part of its body gets the same answer.
    started = time.monotonic()
    stopped = _raw(quiet.port, _head(len(body)), [body[:10]], pause=0)
    assert stopped.startswith(b"HTTP/1.1 408") and time.monotonic() - started < BODY_TIMEOUT + 2


def test_slow_headers_get_408_and_the_connection_closed(quiet: ServeProcess) -> None:
    head = _head(100)
    for parts in ([head[i : i + 1] for i in range(len(head))], [], [head[:20]]):  # trickled, nothing, stopped
        started = time.monotonic()
        answer = _raw(quiet.port, b"", parts, pause=0.2 if len(parts) > 1 else 0)
        assert BODY_TIMEOUT - 0.1 < time.monotonic() - started < BODY_TIMEOUT + 2
        head_part, _, payload = answer.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 408") and b"connection: close" in head_part, answer
        assert set(json.loads(payload)["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "head",
    [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Note: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\x00\r\n\r\n",
        b"GET /v1/models HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello sent to the plain-HTTP port
    ],
    ids=["NUL in a header", "NUL in the key", "malformed request line", "TLS to plain HTTP"],
)
def test_what_is_not_http_gets_400_in_openai_shape(quiet: ServeProcess, head: bytes) -> None:
    started = time.monotonic()
    answer = _raw(quiet.port, head, [], pause=0)
    assert time.monotonic() - started < BOUND
    head_part, _, payload = answer.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head_part, answer
    error = json.loads(payload)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_http_request", error


def test_a_slow_upload_does_not_hold_up_other_clients(served: ServeProcess) -> None:
    import threading

    body = _chat()
    slow: list[bytes] = []
    thread = threading.Thread(target=lambda: slow.append(_raw(served.port, _head(len(body)), [body[:5]], pause=0)))
    thread.start()
    try:
        time.sleep(0.2)
        started = time.monotonic()
        r = httpx.post(f"{served.url}/chat/completions", content=body, headers=HEADERS, timeout=BOUND)
        assert r.status_code == 200 and time.monotonic() - started < BODY_TIMEOUT / 2
    finally:
        thread.join(BOUND)
    assert slow and slow[0].startswith(b"HTTP/1.1 408")


def test_partial_body_then_disconnect_leaves_no_trace(
    upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path: Path
) -> None:
    with ServeProcess(_config(upstreams), tmp_path / "gone") as server:
        body = _chat()
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND) as sock:
                sock.sendall(_head(len(body)) + body[:20])
        time.sleep(0.3)
        r = httpx.post(f"{server.url}/chat/completions", content=body, headers=HEADERS, timeout=BOUND)
        assert r.status_code == 200
        assert len(server.rows()) == 1  # only the answered one: nothing was routed for the others
        # No stuck task: SIGTERM ends the process at once, not after the 20 s shutdown grace.
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(BOUND) == 0 and time.monotonic() - started < BOUND
        log = server.log_text()
    _assert_clean_log(log)
    statuses = [r["status"] for r in map(json.loads, filter(str.strip, log.split("\n"))) if "status" in r]
    assert statuses.count(499) == 5 and 500 not in statuses, statuses


def test_admin_refusals(quiet: ServeProcess) -> None:
    base = f"http://127.0.0.1:{quiet.port}"
    for path in ("/admin/reload", "/admin/api/models/local/pull", "/admin/api/models/x/y/load"):
        r = httpx.post(f"{base}{path}", content=b"\xff" * 10, headers={"authorization": "Bearer wrong"}, timeout=BOUND)
        assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(f"{base}/admin/api/models/primary/pull", content=b"[" * 100_000, headers=HEADERS, timeout=BOUND)
    assert r.status_code == 400 and r.json()["error"]["code"] == "not_manageable"


def test_routed_requests_keep_their_row_when_upstream_refuses(
    served: ServeProcess, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    primary, _ = upstreams
    primary.reset()
    before = len(served.rows())
    refusal = {"message": "temperature and top_p conflict", "type": "invalid_request_error", "param": "top_p"}
    primary.script(Status(400, error=refusal))
    r = _post(served, "/chat/completions", _chat(top_p=0.5, temperature=0.5))
    error = _error(r, 400, "top_p", "conflict")
    assert error["message"] == refusal["message"]
    rows = served.rows()[before:]
    assert [(row["status"], row["provider"] or "primary") for row in rows] == [(400, "primary")], rows

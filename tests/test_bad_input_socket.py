"""Bad input that needs a socket, against a real ``minigate serve`` process: a declared length over the limit,
uploads that trickle or stop (the body deadline), slow or stopped headers and bytes that are not HTTP (uvicorn's
parser, with the gateway's header deadline), a slow upload beside other clients, and clients that leave halfway
through their body. Each is answered with a clear 4xx in OpenAI's error shape within a time bound, and no
traceback reaches the log. The rest of the bad input is in ``tests/test_bad_input.py``, in process.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.serve_process import ServeProcess
from tests.test_bad_input import BODY_TIMEOUT, BOUND, HEADERS, chat_body, served_config


@pytest.fixture(scope="module")
def served(
    upstreams: tuple[FakeUpstream, FakeUpstream], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    """One gateway process for the module."""
    with ServeProcess(served_config(upstreams), tmp_path_factory.mktemp("bad")) as server:
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


def test_a_declared_length_over_the_limit_is_refused_at_once(quiet: ServeProcess) -> None:
    # A declared length over the limit is refused at once, without waiting for a body that never comes. (uvicorn
    # then holds the connection until its keep-alive timeout, 5 s: the answer is read for half a BOUND, no longer.)
    answer = _raw(quiet.port, _head(1 << 30), [], pause=0, limit=BOUND / 2)
    assert answer.startswith(b"HTTP/1.1 413") and b'"error"' in answer


def test_slow_loris_upload_gets_408_and_others_are_served(quiet: ServeProcess) -> None:
    body = chat_body()
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

    body = chat_body()
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
    with ServeProcess(served_config(upstreams), tmp_path / "gone") as server:
        body = chat_body()
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

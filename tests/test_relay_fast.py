"""The relay's fast path (gateway/serving/passthrough.py): a chat-completions stream from an OpenAI-compatible
upstream passed on as the upstream's payloads, in process. What the client sees and what is stored are the same as
the chunk-by-chunk path's: ``model`` set to the deployment, usage removed unless asked for and stored exact, odd
payloads parsed whole, malformed ones and caps ending the stream with an error event and a failed row.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from aiohttp import web

from minigate.providers.chunk_scan import scan_chunk
from tests.conftest import two_provider_config
from tests.fakes.behaviours import Custom, Reply
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "hello there"}]
HEAD = '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'


def chunk(content: str | None = None, finish: str | None = None, head: str = HEAD) -> bytes:
    """One SSE frame of a chat chunk as an upstream writes it."""
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + head.encode() + b'"choices":' + json.dumps([choice]).encode() + b"}\n\n"


USAGE = b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}\n\n'


def upstream(*blocks: bytes) -> Custom:
    """An upstream answering a stream with ``blocks``, each written on its own, 20 ms apart (so the first content
    is relayed before the next block arrives)."""

    async def respond(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i, block in enumerate(blocks):
            if i:
                await asyncio.sleep(0.02)
            await response.write(block)
        await response.write_eof()
        return response

    return Custom(respond)


def stream(gateway: InProcessGateway, **body: Any) -> tuple[httpx.Response, list[Any]]:
    """A streamed chat request to ``fast`` (primary alone): the response and its events (JSON, or "[DONE]")."""
    payload = {"model": "fast", "stream": True, "messages": MESSAGES, **body}
    with gateway.http.stream("POST", "/v1/chat/completions", headers=AUTH, json=payload, timeout=30) as r:
        lines = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    return r, [line if line == "[DONE]" else json.loads(line) for line in lines]


def contents(events: list[Any]) -> str:
    return "".join(
        (c.get("delta") or {}).get("content") or ""
        for e in events
        if isinstance(e, dict)
        for c in e.get("choices") or ()
    )


@pytest.fixture
def gateway(inprocess_gateway: InProcessGateway) -> InProcessGateway:
    return inprocess_gateway


def test_a_plain_stream_is_passed_on_with_the_deployments_model(
    gateway: InProcessGateway, primary: FakeUpstream
) -> None:
    primary.script(Reply(chunks=40))
    r, events = stream(gateway)
    assert r.status_code == 200 and events[-1] == "[DONE]"
    assert contents(events) == " ".join(f"tok{i}" for i in range(40))
    assert {e["model"] for e in events[:-1]} == {"primary/gpt-4o-mini"}
    assert not any("usage" in e for e in events[:-1])  # asked for upstream, not by the client
    row = gateway.row_of(r)
    assert (row["status"], row["completion_tokens"], row["prompt_tokens"]) == (200, 40, 2)


def test_usage_goes_to_the_client_that_asked_with_the_counts_stored(
    gateway: InProcessGateway, primary: FakeUpstream
) -> None:
    primary.script(upstream(chunk("a"), chunk("b") + chunk(finish="stop") + USAGE + b"data: [DONE]\n\n"))
    r, events = stream(gateway, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]" and contents(events) == "ab"
    assert events[-2]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert events[-2]["model"] == "primary/gpt-4o-mini"
    row = gateway.row_of(r)
    assert (row["status"], row["prompt_tokens"], row["completion_tokens"]) == (200, 2, 3)


def test_payloads_whose_model_is_not_plain_are_parsed_whole(gateway: InProcessGateway, primary: FakeUpstream) -> None:
    spaced = '{"id":"c1","object":"chat.completion.chunk","created":1,"model": "gpt-4o-mini",'
    nested = '{"id":"c1","model":"gpt-4o-mini","x":{"model":"gpt-4o-mini"},'
    absent = '{"id":"c1",'
    blocks = [chunk("a"), chunk("b", head=spaced), chunk("c", head=nested), chunk("d", head=absent)]
    blocks.append(b'data: {"id":"c1","model":"gpt-4o-mini",\r"choices":[{"index":0,"delta":{"content":"e"}}]}\n\n')
    primary.script(upstream(*blocks, chunk(finish="stop") + USAGE + b"data: [DONE]\n\n"))
    r, events = stream(gateway)
    assert contents(events) == "abcde" and events[-1] == "[DONE]"
    assert {e["model"] for e in events[:-1]} == {"primary/gpt-4o-mini"}
    assert events[2]["x"] == {"model": "gpt-4o-mini"}  # only the answer's own model is the gateway's to set
    assert gateway.row_of(r)["status"] == 200


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (b"data: {not json\n\n", "upstream_malformed"),
        (b'data: {"choices":[{"index":true,"delta":{"content":"x"}}]}\n\n', "upstream_malformed"),
        (b'data: {"error":{"message":"overloaded","type":"server_error"}}\n\n', "upstream_error"),
    ],
)
def test_a_bad_payload_mid_stream_ends_it_with_an_error_event(
    gateway: InProcessGateway, primary: FakeUpstream, bad: bytes, code: str
) -> None:
    primary.script(upstream(chunk("a"), chunk("b") + bad + chunk("never"), chunk(finish="stop")))
    r, events = stream(gateway)
    assert contents(events) == "ab" and "[DONE]" not in events
    assert events[-1]["error"]["code"] in (code, "server_error"), events[-1]
    row = gateway.row_of(r)
    assert row["status"] >= 500 and row["error"]


def test_a_stream_that_ends_without_finishing_is_cut_short(gateway: InProcessGateway, primary: FakeUpstream) -> None:
    primary.script(upstream(chunk("a"), chunk("b"), chunk("c")))
    r, events = stream(gateway)
    assert contents(events) == "abc"
    assert events[-1]["error"]["code"] == "upstream_truncated"
    assert gateway.row_of(r)["status"] == 502


def test_done_without_a_finish_reason_ends_the_stream_as_it_does_chunk_by_chunk(
    gateway: InProcessGateway, primary: FakeUpstream
) -> None:
    primary.script(upstream(chunk("a"), chunk("b") + b"data: [DONE]\n\n" + chunk("after")))
    r, events = stream(gateway)
    assert contents(events) == "ab" and events[-1] == "[DONE]"
    assert gateway.row_of(r)["status"] == 200


def test_the_stream_cap_holds_on_the_fast_path(
    inprocess_factory: Any, primary: FakeUpstream, backup: FakeUpstream
) -> None:
    config = two_provider_config(primary, backup)
    config["models"]["providers"]["primary"]["limits"] = {"max_stream_bytes": 4000, "max_sse_line_bytes": 1000}
    gateway = inprocess_factory(config)
    many = b"".join(chunk(f"w{i}") for i in range(60))  # about 9 KB in one block
    primary.script(upstream(chunk("a"), many, chunk(finish="stop") + b"data: [DONE]\n\n"))
    r, events = stream(gateway)
    assert events[-1]["error"]["code"] == "upstream_too_large"
    assert "max_stream_bytes (4000)" in events[-1]["error"]["message"]
    primary.script(upstream(chunk("a"), chunk("x" * 1200)))  # one line past max_sse_line_bytes
    r, events = stream(gateway)
    assert contents(events) == "a" and "max_sse_line_bytes (1000)" in events[-1]["error"]["message"]
    assert gateway.row_of(r)["status"] == 502


def test_scan_takes_only_what_it_can_pass_on_unparsed() -> None:
    plain = chunk("hi")[6:-2]
    found = scan_chunk(plain)
    assert found is not None and found.generates() == 1 and not found.finished()
    assert bytes(found.model) == b'"gpt-4o-mini"'
    assert scan_chunk(chunk(finish="stop")[6:-2]).finished()  # type: ignore[union-attr]
    assert scan_chunk(chunk()[6:-2]).generates() == 0  # type: ignore[union-attr]
    for payload in (
        b"[DONE]",
        b"[1]",
        USAGE[6:-2],
        b'{"error":"x"}',
        b'{"choices":[{"index":true}]}',
        b'{"choices":[{"delta":{"content":5}}]}',
        b'{"choices":[{"delta":{"tool_calls":[1]}}]}',
        b'{"choices":"x"}',
        b'{"model":"m",\r"choices":[]}',
        b'{"choices":[',
    ):
        assert scan_chunk(payload) is None, payload

"""Errors under ``/v1/messages`` come in Anthropic's shape with its status codes, whoever raised them: the
translation's refusals, the gateway's own errors, Litestar's (405, 404, 413), plugins' refusals, upstream
failures before and during a stream. The rest of ``/v1`` keeps OpenAI's shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import one_provider_config
from tests.fakes.behaviours import Status, StreamError
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import ADMIN_KEY
from tests.http.anthropic_sdk import anthropic_client
from tests.inprocess import InProcessGateway

HI: list[Any] = [{"role": "user", "content": "Hi"}]
KEY = {"x-api-key": ADMIN_KEY}


@pytest.fixture
def app(inprocess_factory: Callable[..., InProcessGateway], upstream: FakeUpstream) -> InProcessGateway:
    """The gateway over the upstream "up" (model ``default``), with a 4 KiB body limit."""
    return inprocess_factory(one_provider_config(upstream, max_body_bytes=4096))


@pytest.fixture
def client(app: InProcessGateway) -> Iterator[anthropic.Anthropic]:
    with anthropic_client(app) as sdk:
        yield sdk


def anthropic_error(r: httpx.Response, status: int, kind: str) -> str:
    """The message of an error answer in Anthropic's shape, after checking its status and type."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    message: str = body["error"]["message"]
    return message


def post(app: InProcessGateway, body: Any, path: str = "/v1/messages") -> httpx.Response:
    return app.http.post(path, json=body, headers=KEY)


def test_max_tokens_is_required(app: InProcessGateway) -> None:
    """As Anthropic requires it (its SDKs refuse to send a request without it, other clients may)."""
    r = post(app, {"model": "default", "messages": HI})
    assert anthropic_error(r, 400, "invalid_request_error") == "Missing required parameter: 'max_tokens'."


def test_a_server_tool_is_refused_naming_its_type(client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="default",
            max_tokens=10,
            messages=HI,
            tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
        )
    assert "'web_search_20250305'" in caught.value.body["error"]["message"]
    assert upstream.requests == []  # refused before any upstream saw it


@pytest.mark.parametrize(
    "body",
    [
        {"model": "default", "max_tokens": 10},
        {"model": "default", "max_tokens": 10, "messages": "Hi"},
        {"model": "default", "max_tokens": 10, "messages": [{"role": "tool", "content": "x"}]},
        {"model": "default", "max_tokens": -5, "messages": HI},
        {"model": "", "max_tokens": 10, "messages": HI},
        {"model": "default", "max_tokens": 10, "messages": HI, "temperature": 3},
        {"model": "default", "max_tokens": 10, "messages": HI, "tool_choice": {"type": "any"}},
        [1, 2],
    ],
)
def test_bad_requests(app: InProcessGateway, body: Any) -> None:
    anthropic_error(post(app, body), 400, "invalid_request_error")


def test_a_body_that_is_not_json(app: InProcessGateway) -> None:
    r = app.http.post("/v1/messages", content=b"{nope", headers={**KEY, "content-type": "application/json"})
    assert "not valid JSON" in anthropic_error(r, 400, "invalid_request_error")


def test_a_body_over_the_limit(app: InProcessGateway) -> None:
    body = {"model": "default", "max_tokens": 10, "messages": [{"role": "user", "content": "x" * 8000}]}
    assert anthropic_error(post(app, body), 413, "request_too_large") == "Request body too large."


def test_litestar_s_own_errors_under_the_path(app: InProcessGateway) -> None:
    anthropic_error(app.http.get("/v1/messages", headers=KEY), 405, "invalid_request_error")
    assert "/v1/messages/batches" in anthropic_error(post(app, {}, "/v1/messages/batches"), 404, "not_found_error")
    anthropic_error(app.http.get("/v1/messages/count_tokens", headers=KEY), 405, "invalid_request_error")


def test_the_rest_of_v1_keeps_openai_s_shape(app: InProcessGateway) -> None:
    for r in (app.http.post("/v1/chat/completions", json={}), app.http.get("/v1/messagesx")):
        assert set(r.json()) == {"error"} and {"message", "type"} <= set(r.json()["error"])


def test_count_tokens_errors(app: InProcessGateway) -> None:
    anthropic_error(
        app.http.post("/v1/messages/count_tokens", json={"model": "default", "messages": HI}),
        401,
        "authentication_error",
    )
    anthropic_error(post(app, {"model": "default"}, "/v1/messages/count_tokens"), 400, "invalid_request_error")
    tools = [{"type": "bash_20250124", "name": "bash"}]
    body = {"model": "default", "messages": HI, "tools": tools}
    assert "'bash_20250124'" in anthropic_error(
        post(app, body, "/v1/messages/count_tokens"), 400, "invalid_request_error"
    )


@pytest.mark.parametrize(
    ("upstream_status", "status", "kind"),
    [(500, 502, "api_error"), (429, 429, "rate_limit_error"), (400, 400, "invalid_request_error")],
)
def test_an_upstream_failure(
    app: InProcessGateway, upstream: FakeUpstream, upstream_status: int, status: int, kind: str
) -> None:
    upstream.script(Status(upstream_status))
    message = anthropic_error(post(app, {"model": "default", "max_tokens": 10, "messages": HI}), status, kind)
    assert f"fake error {upstream_status}" in message
    [row] = app.wait_rows(1)
    assert (row["endpoint"], row["status"]) == ("messages", status)


def test_a_failure_mid_stream_is_an_error_event(
    client: anthropic.Anthropic, app: InProcessGateway, upstream: FakeUpstream
) -> None:
    upstream.script(StreamError(2, {"message": "the model crashed"}))
    seen: list[str] = []
    stream = client.messages.stream(model="default", max_tokens=10, messages=HI)
    with pytest.raises(anthropic.APIStatusError) as caught, stream as events:  # raised on Anthropic's error event
        seen.extend(events.text_stream)
    assert seen and caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "the model crashed" in caught.value.body["error"]["message"]  # type: ignore[index]
    [row] = app.wait_rows(1)
    assert row["status"] >= 500 and row["streamed"] == 1


def test_a_plugin_refusal(inprocess_factory: Callable[..., InProcessGateway], upstream: FakeUpstream) -> None:
    """Plugins see a Messages request as the chat request it became, and their refusals keep Anthropic's shape."""
    config = one_provider_config(upstream)
    settings = {"prompt_limit": {"options": {"max_chars": 50}}}
    config["plugins"] = {
        "modules": ["minigate_plugins.prompt_limit:PromptLimit"],
        "entry_points": False,
        "settings": settings,
    }
    app = inprocess_factory(config)
    assert post(app, {"model": "default", "max_tokens": 10, "messages": HI}).status_code == 200
    body = {
        "model": "default",
        "max_tokens": 10,
        "system": "s" * 40,
        "messages": [{"role": "user", "content": "u" * 40}],
    }
    assert "80 characters" in anthropic_error(post(app, body), 413, "request_too_large")

"""The /v1 surface and pass-through, with the official openai SDK against the gateway in process."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.upstream import FakeUpstream, Reply
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway


def test_chat_json_through_the_default_agent(inprocess_gateway: InProcessGateway, primary: FakeUpstream) -> None:
    client = inprocess_gateway.client()
    raw = client.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "hello there"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello from primary"
    assert answer.model == "primary/gpt-4o-mini"
    assert raw.headers["x-minigate-provider"] == "primary"
    assert raw.headers["x-minigate-fallbacks"] == "0"
    # The upstream got its own key and model name, not the client's.
    seen = primary.requests[-1]
    assert seen.headers["authorization"] == "Bearer primary-key"
    assert seen.body is not None and seen.body["model"] == "gpt-4o-mini"
    [row] = inprocess_gateway.rows()
    assert (row["status"], row["provider"], row["model"], row["agent"]) == (
        200,
        "primary",
        "gpt-4o-mini",
        "defaults",
    )
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (2, 3, 5)
    assert row["streamed"] == 0 and row["fallbacks"] == 0 and row["latency_ms"] > 0


def test_stream_with_include_usage_ends_with_a_usage_chunk(inprocess_gateway: InProcessGateway) -> None:
    stream = inprocess_gateway.client().chat.completions.create(
        model="coder",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from backup"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert {c.model for c in chunks} == {"backup/qwen-coder"}
    [row] = inprocess_gateway.rows()
    assert row["streamed"] == 1 and row["completion_tokens"] == 3 and row["ttft_ms"] is not None


def test_stream_without_include_usage_hides_usage_but_stores_it(
    inprocess_gateway: InProcessGateway, backup: FakeUpstream
) -> None:
    with inprocess_gateway.http.stream(
        "POST",
        f"{inprocess_gateway.url}/chat/completions",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        json={"model": "code", "stream": True, "messages": [{"role": "user", "content": "x y"}]},
    ) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert not any('"usage"' in line for line in lines)
    body = backup.requests[-1].body
    assert body is not None and body["stream_options"] == {"include_usage": True}
    [row] = inprocess_gateway.rows()
    assert (row["prompt_tokens"], row["completion_tokens"]) == (2, 3)


def test_unknown_fields_pass_through_both_ways(inprocess_gateway: InProcessGateway, primary: FakeUpstream) -> None:
    primary.script(Reply(extra={"system_fingerprint": "fp_123", "service_tier": "default"}))
    extra = {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "seed": 7,
        "n": 2,
        "metadata": {"a": "b"},
        "vendor_thing": [1, {"x": None}],
    }
    answer = inprocess_gateway.client().chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "hi"}],
        extra_body=extra,
        temperature=0.5,
    )
    body = primary.requests[-1].body
    assert body is not None
    for key, value in extra.items():
        assert body[key] == value
    assert body["temperature"] == 0.5
    assert answer.system_fingerprint == "fp_123" and answer.service_tier == "default"


def test_routing_fields_and_client_headers_never_reach_upstream(
    inprocess_gateway: InProcessGateway, primary: FakeUpstream
) -> None:
    client = inprocess_gateway.client(default_headers={"x-evil": "1", "openai-organization": "org"})
    client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={
            "api_base": "http://127.0.0.1:1/v1",
            "base_url": "http://127.0.0.1:1",
            "api_key": "stolen",
            "extra_headers": {"x-injected": "1"},
        },
    )
    seen = primary.requests[-1]
    assert seen.body is not None
    assert not {"api_base", "base_url", "api_key", "extra_headers"} & set(seen.body)
    assert seen.headers["authorization"] == "Bearer primary-key"
    assert ADMIN_KEY not in str(seen.headers)
    assert "x-evil" not in seen.headers and "x-injected" not in seen.headers
    assert "openai-organization" not in seen.headers


def test_completions_and_embeddings(inprocess_gateway: InProcessGateway) -> None:
    client = inprocess_gateway.client()
    text = client.completions.create(model="primary/gpt-4o-mini", prompt="say hi")
    assert text.choices[0].text and text.model == "primary/gpt-4o-mini"
    emb = client.embeddings.create(model="backup/embedder", input=["a", "b c"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    assert [r["endpoint"] for r in inprocess_gateway.rows()] == ["completions", "embeddings"]


def test_models_list_and_get(inprocess_gateway: InProcessGateway) -> None:
    client = inprocess_gateway.client()
    ids = [m.id for m in client.models.list()]
    for expected in ("default", "coder", "fast", "code", "primary/gpt-4o-mini", "backup/llama3-8b"):
        assert expected in ids
    assert "defaults" not in ids
    assert client.models.retrieve("primary/gpt-4o-mini").id == "primary/gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_errors_have_openai_shape(inprocess_gateway: InProcessGateway) -> None:
    with pytest.raises(openai.AuthenticationError) as auth:
        inprocess_gateway.client(key="wrong").chat.completions.create(
            model="default", messages=[{"role": "user", "content": "x"}]
        )
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        inprocess_gateway.client().chat.completions.create(model="no-such", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    headers = {"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"}
    cases = [
        (b"{not json", 400, None),
        (b"[1,2]", 400, None),
        (b'{"model": "default"}', 400, "messages"),
        (b'{"model": "default", "messages": []}', 400, "messages"),
        (b'{"model": "default", "messages": [{"role": "user", "content": 5}]}', 400, "messages[0].content"),
        (b'{"model": "default", "messages": [{"role": "user"}], "temperature": 9}', 400, "temperature"),
        (b'{"model": 1, "messages": [{"role": "user"}]}', 400, "model"),
    ]
    for body, status, param in cases:
        r = inprocess_gateway.http.post(f"{inprocess_gateway.url}/chat/completions", content=body, headers=headers)
        assert r.status_code == status, body
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] == param, body
        assert "Traceback" not in r.text
    r = inprocess_gateway.http.get(f"{inprocess_gateway.url}/nowhere", headers=headers)
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    too_big = b'{"model": "default", "messages": [{"role": "user", "content": "' + b"x" * (9 << 20) + b'"}]}'
    r = inprocess_gateway.http.post(f"{inprocess_gateway.url}/chat/completions", content=too_big, headers=headers)
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    # No request reached an upstream and the refusals before routing stored nothing.
    assert inprocess_gateway.rows() == []

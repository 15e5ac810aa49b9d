"""Workflows: checked config, routes called with a plain HTTP client (JSON and SSE), bad input, fallbacks.

In process, but for the streams: SSE and a client leaving mid-stream go over a real socket.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from minigate.gateway.config.schema import ConfigError
from minigate.gateway.plugins.loader import builtin_extensions, configure
from tests.fakes.upstream import FakeUpstream, Reply, Status
from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.inprocess import InProcessGateway
from tests.plugins import ensure_testplugin

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}

# The issue's example, with the in-process echo model in place of the local one.
TECH_DOCS = {
    "name": "tech-docs",
    "steps": [
        {"type": "prompt_template", "template": "Write technical documentation for: {{input}}"},
        {"type": "llm_inference", "model": "local/echo"},
        {"type": "markdown_render"},
    ],
    "triggers": [{"path": "/api/docs/generate", "method": "POST"}],
}


def config(remote: FakeUpstream, *workflows: dict[str, Any]) -> dict[str, Any]:
    return {
        "agents": {
            "defaults": {"model": {"primary": "local/echo"}},
            "writer": {"model": {"primary": "remote/gpt-4o-mini", "fallbacks": ["local/echo"]}},
        },
        "models": {
            "providers": {
                "local": {"type": "fake", "models": ["echo"]},
                "remote": {"endpoint": remote.url, "auth": {"type": "api_key", "value": "primary-key"}, "timeout": 2},
            }
        },
        "workflows": [TECH_DOCS, *workflows],
    }


def flow(name: str, path: str, *steps: dict[str, Any], method: str = "POST") -> dict[str, Any]:
    return {"name": name, "steps": list(steps), "triggers": [{"path": path, "method": method}]}


def routes_config(primary: FakeUpstream) -> dict[str, Any]:
    """The issue's example and four more workflows."""
    raw = flow(
        "raw",
        "/api/echo",
        {"type": "prompt_template", "template": "{{ input }} | {{ previous }}"},
        {"type": "llm_inference", "model": "local/echo", "system": "Be brief.", "max_tokens": 50},
    )
    two = flow(
        "two-models",
        "/api/two",
        {"type": "prompt_template", "template": "Draft: {{ topic }}"},
        {"type": "llm_inference", "model": "writer"},
        {"type": "prompt_template", "template": "Review: {{ previous }} (topic {{ outputs[0] }})"},
        {"type": "llm_inference", "model": "default"},
    )
    unsafe = flow("unsafe", "/api/unsafe", {"type": "prompt_template", "template": "{{ input.__class__ }}"})
    query = flow("by-get", "/api/get", {"type": "prompt_template", "template": "got {{ q }}"}, method="GET")
    return config(primary, raw, two, unsafe, query)


@pytest.fixture
def server(inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream) -> InProcessGateway:
    return inprocess_factory(routes_config(primary))


@pytest.fixture
def http(server: InProcessGateway) -> httpx.Client:
    with server.new_http(headers=AUTH) as client:
        yield client  # type: ignore[misc]


@pytest.fixture
def socket_http(gateway_factory: Callable[..., GatewayServer], primary: FakeUpstream) -> httpx.Client:
    """:func:`http` of a real gateway, for streams over a socket."""
    real = gateway_factory(routes_config(primary))
    with httpx.Client(base_url=f"http://127.0.0.1:{real.port}", headers=AUTH, timeout=10) as client:
        yield client  # type: ignore[misc]


def sse(response: httpx.Response) -> list[Any]:
    """The events of a stream, decoded ([DONE] as an empty dict)."""
    return [json.loads(line[6:]) if line != "data: [DONE]" else {} for line in response.iter_lines() if line]


def test_the_issue_example_runs_as_a_route(server: InProcessGateway, http: httpx.Client) -> None:
    answer = http.post("/api/docs/generate", json={"input": "the **cache** layer"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["object"] == "workflow.result" and result["workflow"] == "tech-docs"
    expected = "You said: Write technical documentation for: the <strong>cache</strong> layer"
    assert result["output"] == f"<p>{expected}</p>\n"
    assert result["steps"] == [
        {"type": "prompt_template"},
        {"type": "llm_inference", "model": "local/echo", "fallbacks": 0},
        {"type": "markdown_render"},
    ]
    assert result["usage"] == {"prompt_tokens": 7, "completion_tokens": 9, "total_tokens": 16}
    [row] = server.wait_rows(1)  # one usage row per inference, under the workflow request's id
    assert row["request_id"] == result["request_id"] == answer.headers["x-request-id"]
    assert (row["status"], row["provider"], row["model"], row["total_tokens"]) == (200, "local", "echo", 16)


def test_input_is_data_never_template_code(http: httpx.Client) -> None:
    text = "{{ 7*7 }} {% for x in range(3) %}x{% endfor %} {{ config }}"
    result = http.post("/api/echo", json={"input": text}).json()
    assert result["output"] == f"You said: {text} |"


def test_the_sandbox_refuses_unsafe_templates(http: httpx.Client) -> None:
    answer = http.post("/api/unsafe", json={"input": "x"})
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "workflow_template_error"


def test_an_llm_step_naming_an_agent_falls_back(
    server: InProcessGateway, http: httpx.Client, primary: FakeUpstream
) -> None:
    primary.script(Status(503))
    result = http.post("/api/two", json={"topic": "queues"}).json()
    assert result["steps"][1] == {"type": "llm_inference", "model": "local/echo", "fallbacks": 1}
    assert result["output"] == "You said: Review: You said: Draft: queues (topic Draft: queues)"
    rows = server.wait_rows(2)
    assert [(r["agent"], r["fallbacks"]) for r in rows] == [("writer", 1), ("defaults", 0)]
    assert len({r["request_id"] for r in rows}) == 1


def test_streamed_output(socket_http: httpx.Client) -> None:
    http = socket_http
    with http.stream("POST", "/api/docs/generate", json={"input": "queues", "stream": True}) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = sse(answer)
    assert events[-1] == {} and events[-2]["object"] == "workflow.result"  # {}: [DONE]
    assert [e["type"] for e in events if e.get("object") == "workflow.step"] == [
        "prompt_template",
        "llm_inference",
        "markdown_render",
    ]
    deltas = [e["delta"] for e in events if e.get("object") == "workflow.delta"]
    assert len(deltas) > 3 and "".join(deltas) == "You said: Write technical documentation for: queues"
    assert events[-2]["usage"]["completion_tokens"] == len(deltas)
    with http.stream("POST", "/api/echo", json={"input": "hi"}, headers={"accept": "text/event-stream"}) as answer:
        assert sse(answer)[-2]["output"] == "You said: hi |"


def test_a_get_trigger_reads_the_query(http: httpx.Client) -> None:
    assert http.get("/api/get", params={"q": "this"}).json()["output"] == "got this"


@pytest.mark.parametrize(
    ("body", "status", "param", "message"),
    [
        (b"{not json", 400, None, "The body is not valid JSON"),
        (b"[" * 100_000, 400, None, "The body is nested too deeply"),
        (b'{"input": "\xff"}', 400, None, "The body is not valid UTF-8"),
        (b'["input"]', 400, None, "The body must be a JSON object"),
        (b'{"text": "no input field"}', 400, "input", "The workflow's input has no field 'input' (step 0 uses it)."),
        (b'{"input": "x", "stream": "yes"}', 400, "stream", "'stream' must be true or false."),
    ],
)
def test_bad_input(
    server: InProcessGateway, http: httpx.Client, body: bytes, status: int, param: str | None, message: str
) -> None:
    answer = http.post("/api/docs/generate", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["message"].startswith(message) and error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert server.rows() == []  # nothing reached a model


def test_auth_and_methods(server: InProcessGateway, http: httpx.Client) -> None:
    url = "/api/docs/generate"
    anonymous = server.http.post(url, json={"input": "x"})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
    assert server.http.post(url, json={"input": "x"}, headers={"authorization": "Bearer no"}).status_code == 401
    assert http.get("/api/docs/generate").status_code == 405


def test_a_client_leaving_mid_stream_cancels_the_upstream_call(
    gateway_factory: Callable[..., GatewayServer], primary: FakeUpstream
) -> None:
    primary.set_default(Reply(chunks=50, interval=0.05))
    slow = flow("slow", "/api/slow", {"type": "llm_inference", "model": "remote/gpt-4o-mini"})
    server = gateway_factory(config(primary, slow))
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers=AUTH, timeout=10) as http,
        http.stream("POST", "/api/slow", json={"stream": True}) as answer,
    ):
        for line in answer.iter_lines():
            if '"workflow.delta"' in line:
                break
    assert primary.wait_for_disconnect(5)
    [row] = server.wait_rows(1)
    assert row["status"] == 499


def test_a_plugin_adds_a_step_type(inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream) -> None:
    ensure_testplugin()
    shout = flow(
        "shout",
        "/api/shout",
        {"type": "prompt_template", "template": "{{ input }}"},
        {"type": "shout", "marks": 3},
    )
    server = inprocess_factory(config(primary, shout))
    answer = server.http.post("/api/shout", json={"input": "hey"}, headers=AUTH)
    assert answer.json()["output"] == "HEY!!!"


def problems(*workflows: dict[str, Any]) -> list[str]:
    raw = {
        "agents": {"defaults": {"model": {"primary": "local/echo"}}},
        "models": {"providers": {"local": {"type": "fake", "models": ["echo"]}}},
        "workflows": list(workflows),
        "plugins": {"entry_points": False},
    }
    with pytest.raises(ConfigError) as caught:
        configure(raw, builtin_extensions(), env={})
    return str(caught.value).splitlines()


def test_config_errors_name_their_path() -> None:
    template = {"type": "prompt_template", "template": "{{ x }}"}
    # Where a library's own sentence follows the gateway's words (Jinja's parse error, msgspec's enum error), only
    # the gateway's part is compared: the libraries may word theirs differently from one version to the next.
    bad_template = "workflows[2].steps[0].template: not a valid template (line 1): "
    found = problems(
        flow("a b", "/api/a", template),
        flow("ok", "/v1/chat", {"type": "translate"}),
        flow("ok2", "/api/c", {"type": "prompt_template", "template": "{% if %}"}),
        flow("ok3", "/api/d", {"type": "llm_inference", "model": "nowhere/x", "temprature": 1}),
        flow("ok4", "/api/e", {"type": "llm_inference", "model": "gpt-9", "max_tokens": 0}),
        {"name": "ok5", "steps": [], "triggers": [{"path": "/api/a"}, {"path": "api/x"}]},
    )
    assert [bad_template if line.startswith(bad_template) else line for line in found] == [
        "workflows[0].name: 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit",
        "workflows[1].triggers[0].path: '/v1/chat' belongs to the gateway itself",
        "workflows[1].steps[0].type: unknown step type 'translate' (known: llm_inference, markdown_render, "
        "prompt_template)",
        bad_template,
        "workflows[3].steps[0].temprature: unknown key",
        "workflows[4].steps[0].model: not an agent, alias or 'provider/model' reference: 'gpt-9'",
        "workflows[4].steps[0].max_tokens: must be a positive integer",
        "workflows[5].steps: a workflow needs at least one step",
        "workflows[5].triggers[0]: POST /api/a already runs workflow 'a b'",
        "workflows[5].triggers[1].path: must be an absolute path of plain segments (letters, digits, '_', '-', '.', "
        "'~'), e.g. '/api/x'",
    ]
    assert problems(flow("x", "/api/x", {"type": "llm_inference", "model": "local/nope"})) == [
        "workflows[0].steps[0].model: provider 'local' does not list model 'nope'"
    ]
    [method] = problems({"name": "x", "steps": [template], "triggers": [{"path": "/x", "method": "PATCH"}]})
    assert method.startswith("workflows[0].triggers[0].method: ") and "'PATCH'" in method, method

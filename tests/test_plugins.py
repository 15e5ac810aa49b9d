"""Plugins: loaded from an installed package's entry point or a module in config, every hook, and isolation."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minigate.gateway.config.schema import ConfigError
from minigate.gateway.plugins.loader import Extensions, builtin_extensions, configure, plugin_hooks
from tests.fakes.upstream import FakeUpstream, Reply
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.plugins import ensure_testplugin
from tests.web.helpers import WebClient

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="session", autouse=True)
def testplugin() -> None:
    """The test plugin package, pip-installed into this environment if it is not (or is outdated)."""
    ensure_testplugin()


def chat(text: str = "hello there", model: str = "default", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def local_config(**plugins: Any) -> dict[str, Any]:
    """The in-process echo provider as the default agent, plus a ``plugins`` section."""
    return {
        "agents": {"defaults": {"model": {"primary": "local/echo"}}},
        "models": {"providers": {"local": {"type": "fake", "models": ["echo"]}}},
        "plugins": plugins,
    }


def check(raw: dict[str, Any]) -> Extensions:
    registry = builtin_extensions()
    configure(raw, registry, env={})
    assert isinstance(registry, Extensions)
    return registry


def issues_of(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        configure(raw, builtin_extensions(), env={})
    return str(caught.value)


def test_builtin_providers_and_steps_are_plugins_loaded_first() -> None:
    registry = check({"plugins": {"entry_points": False}})
    assert [(p.name, p.source) for p in registry.plugins] == [
        ("builtin-providers", "built in"),
        ("builtin-steps", "built in"),
    ]
    assert {"openai", "onnxruntime-genai", "fake"} <= set(registry.providers.names())
    assert registry.steps.names() == ["llm_inference", "markdown_render", "prompt_template"]
    assert plugin_hooks(registry) is None  # no process hook anywhere: the request path skips plugins


def test_the_installed_package_is_loaded_through_its_entry_point() -> None:
    registry = check({"plugins": {"settings": {"testplugin": {"options": {"active": True}}}}})
    plugin = next(p for p in registry.plugins if p.name == "testplugin")
    assert plugin.source.startswith("entry point 'testplugin' (minigate-testplugin 0.1.0)")
    assert "testplugin-echo" in registry.providers.names() and "shout" in registry.steps.names()
    assert [link.href for link in registry.links] == ["/testplugin/hello"]
    assert len(registry.routes) == 1 and plugin_hooks(registry) is not None


def test_an_inactive_plugin_can_switch_its_process_hook_off() -> None:
    registry = check({})
    assert "testplugin" in [p.name for p in registry.plugins]
    assert plugin_hooks(registry) is None and not registry.routes


def test_entry_points_can_be_turned_off_or_one_disabled() -> None:
    assert "testplugin" not in [p.name for p in check({"plugins": {"entry_points": False}}).plugins]
    disabled = check({"plugins": {"settings": {"testplugin": {"enabled": False}}}})
    assert "testplugin" not in [p.name for p in disabled.plugins]


def test_a_plugin_gets_every_hook_in_a_running_gateway(
    inprocess_factory: Callable[..., InProcessGateway], tmp_path: Path
) -> None:
    marker = tmp_path / "shutdown.txt"
    config = local_config(settings={"testplugin": {"options": {"active": True, "shutdown_file": str(marker)}}})
    config["models"]["providers"]["ext"] = {"type": "testplugin-echo", "models": ["echo"]}
    server = inprocess_factory(config)
    with server.new_http(headers=AUTH) as http:
        assert http.get("/testplugin/hello").json() == {"hello": "from testplugin"}  # its route
        answer = http.post("/v1/chat/completions", json=chat(model="ext/echo"))  # its provider type
        assert answer.status_code == 200, answer.text
        assert answer.json()["testplugin"] == {"stage": "response", "provider_type": "testplugin-echo"}
        # Before routing it may change the model...
        moved = http.post("/v1/chat/completions", json=chat(model="testplugin-shortcut"))
        assert moved.status_code == 200 and moved.json()["model"] == "local/echo"
        # ...or refuse the request, with its own status and code in OpenAI's error shape.
        refused = http.post("/v1/chat/completions", json=chat("a forbidden word"))
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert error["code"] == "forbidden_word" and "Plugin 'testplugin' refused" in error["message"]
        # Stream chunks pass through it too.
        with http.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as stream:
            chunks = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")]
        assert chunks and all(c["testplugin"]["stage"] == "chunk" for c in chunks)
    web = WebClient(server)
    try:
        assert web.login(ADMIN_KEY).status_code == 303
        assert '<a href="/testplugin/hello">Test plugin</a>' in web.http.get("/usage").text  # its UI link
    finally:
        web.close()
    server.stop()
    assert marker.read_text() == "shut down"


def test_a_plugin_that_fails_to_start_stops_the_gateway_with_its_name_or_is_left_out(
    inprocess_factory: Callable[..., InProcessGateway],
) -> None:
    message = issues_of(local_config(modules=["tests.plugins.broken_init"]))
    assert message.startswith("plugins.modules[0]: plugin 'broken_init' (module 'tests.plugins.broken_init')")
    assert "failed in init: RuntimeError: cannot start: the licence server is down" in message
    assert "on_error: 'skip'" in message  # and how to start without it
    skipped = local_config(modules=["tests.plugins.broken_init"], settings={"broken_init": {"on_error": "skip"}})
    server = inprocess_factory(skipped)
    answer = server.client().chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "You said: hi"


def test_config_errors_name_the_plugin_path() -> None:
    assert issues_of(local_config(modules=["no_such_plugin_module"])).startswith(
        "plugins.modules[0]: module 'no_such_plugin_module' could not be loaded: ModuleNotFoundError"
    )
    assert "plugins.settings.typo: no plugin of that name" in issues_of(local_config(settings={"typo": {}}))
    assert "plugins.on_error: " in issues_of(local_config(on_error="ignore"))


def test_plugins_may_not_take_over_a_registered_type_nor_process_asynchronously(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "clash_plugin.py").write_text(
        textwrap.dedent(
            """
            from minigate.providers.fake import FakeProvider, FakeProviderConfig
            from minigate.providers.registry import ProviderType

            def init(api):
                api.providers.register(ProviderType("fake", FakeProviderConfig, lambda n, c, x: FakeProvider(n, c)))
            """
        )
    )
    (tmp_path / "async_plugin.py").write_text("async def process(event):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "registers provider type 'fake', which another plugin registered first" in issues_of(
        local_config(modules=["clash_plugin"])
    )
    assert "process must be a plain function" in issues_of(local_config(modules=["async_plugin"]))


def test_a_failing_process_hook_fails_the_request_not_the_gateway(
    inprocess_factory: Callable[..., InProcessGateway],
) -> None:
    server = inprocess_factory(local_config(modules=["tests.plugins.broken_process:Broken"]))
    with server.new_http(headers=AUTH) as http:
        for _ in range(2):
            failed = http.post("/v1/chat/completions", json=chat())
            assert failed.status_code == 500
            assert failed.json()["error"]["code"] == "plugin_error"
            assert "Plugin 'broken_process' failed (ZeroDivisionError)" in failed.json()["error"]["message"]
            assert "a bug in the plugin" not in failed.text  # details stay in the log
        assert http.get("/health").status_code == 200
        assert http.get("/v1/models").status_code == 200


def test_a_failing_hook_after_routing_is_stored_as_the_calls_row(
    inprocess_factory: Callable[..., InProcessGateway],
) -> None:
    config = local_config(
        modules=["tests.plugins.broken_process:Broken"], settings={"broken_process": {"options": {"stage": "upstream"}}}
    )
    server = inprocess_factory(config)
    with server.new_http(headers=AUTH) as http:
        assert http.post("/v1/chat/completions", json=chat()).json()["error"]["code"] == "plugin_error"
    [row] = server.wait_rows(1)
    assert row["status"] == 500 and "broken_process" in row["error"]


def test_a_failing_process_hook_is_passed_over_when_configured_to_skip(
    inprocess_factory: Callable[..., InProcessGateway],
) -> None:
    config = local_config(
        modules=["tests.plugins.broken_process:Broken"], settings={"broken_process": {"on_error": "skip"}}
    )
    server = inprocess_factory(config)
    client = server.client()
    assert client.chat.completions.create(**chat("still works")).choices[0].message.content == "You said: still works"
    streamed = client.chat.completions.create(**chat("streams too"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "You said: streams too"


def test_a_deployment_refused_by_a_plugin_falls_back_to_the_next(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream
) -> None:
    config = local_config(modules=["tests.plugins.local_only"])
    config["agents"]["defaults"]["model"] = {"primary": "remote/gpt-4o-mini", "fallbacks": ["local/echo"]}
    config["models"]["providers"]["remote"] = {
        "endpoint": primary.url,
        "auth": {"type": "api_key", "value": "primary-key"},
    }
    server = inprocess_factory(config)
    with server.new_http(base_url=server.url, headers=AUTH) as http:
        answer = http.post("/chat/completions", json=chat("stay home"))
    assert answer.status_code == 200 and answer.headers["x-minigate-provider"] == "local"
    assert answer.headers["x-minigate-fallbacks"] == "1"
    assert primary.requests == []  # nothing left for the remote provider
    [row] = server.wait_rows(1)
    assert "this gateway keeps prompts on local models" in row["hops"]


def test_a_plugin_can_refuse_an_answer_or_end_a_stream(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream
) -> None:
    primary.set_default(Reply(chunks=6))
    config = {
        "agents": {"defaults": {"model": {"primary": "remote/gpt-4o-mini"}}},
        "models": {
            "providers": {"remote": {"endpoint": primary.url, "auth": {"type": "api_key", "value": "primary-key"}}}
        },
        "plugins": {"modules": ["tests.plugins.chunk_guard"]},
    }
    server = inprocess_factory(config)
    with server.new_http(base_url=server.url, headers=AUTH) as http:
        refused = http.post("/chat/completions", json=chat())
        assert refused.status_code == 451 and refused.json()["error"]["code"] == "unwanted_answer"
        with http.stream("POST", "/chat/completions", json=chat(stream=True)) as stream:
            events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")]
    contents = [e["choices"][0]["delta"].get("content") for e in events if e.get("choices")]
    assert "".join(c or "" for c in contents) == "tok0 tok1 tok2"  # cut before the refused chunk
    assert events[-1]["error"]["code"] == "unwanted_answer"
    rows = server.wait_rows(2)
    assert [r["status"] for r in rows] == [451, 451]

"""The hook specs: the loader checks every plugin's hooks against them, and the example plugin follows them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from minigate.gateway.plugins.hookspecs import HOOKS, Event, Rejected, hook_problem
from minigate.gateway.plugins.loader import shutdown_plugins
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.test_plugins import check, issues_of

EXAMPLE = "minigate_plugins.prompt_limit:PromptLimit"


def config(modules: list[str], **settings: Any) -> dict[str, Any]:
    return {
        "agents": {"defaults": {"model": {"primary": "local/echo"}}},
        "models": {"providers": {"local": {"type": "fake", "models": ["echo"]}}},
        "plugins": {"modules": modules, "entry_points": False, "settings": settings},
    }


def test_each_hook_is_checked_against_its_spec() -> None:
    assert list(HOOKS) == ["init", "process", "shutdown"]
    assert hook_problem("init", lambda api: None) is None
    assert hook_problem("process", lambda event, *more: None) is None
    assert hook_problem("process", lambda event, extra: None) == "process must take (event)"
    assert hook_problem("init", lambda: None) == "init must take (api)"
    assert hook_problem("shutdown", lambda now: None) == "shutdown must take ()"
    assert hook_problem("process", "not a function") == "process is not a function"

    async def later(event: Event) -> None: ...

    async def close() -> None: ...

    assert hook_problem("process", later) == "process must be a plain function (it runs for every stream chunk)"
    assert hook_problem("shutdown", close) is None  # shutdown may be a coroutine function: it is awaited


def test_the_loader_refuses_a_hook_that_does_not_fit_its_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "two_args.py").write_text("def process(event, extra):\n    pass\n")
    (tmp_path / "async_init.py").write_text("async def init(api):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plugins.modules[0]: module 'two_args': process must take (event)" in issues_of(config(["two_args"]))
    assert "module 'async_init': init must be a plain function" in issues_of(config(["async_init"]))


def test_the_example_plugin_uses_every_hook(caplog: pytest.LogCaptureFixture) -> None:
    registry = check(config([EXAMPLE], prompt_limit={"options": {"max_chars": 10}}))
    plugin = next(p for p in registry.plugins if p.name == "prompt_limit")
    assert plugin.process is not None and plugin.shutdown is not None
    short = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    plugin.process(Event("request", "chat/completions", short, "r1", None))
    with pytest.raises(Rejected) as refused:
        plugin.process(Event("request", "completions", {"prompt": ["hello", "world!"]}, "r2", None))
    assert refused.value.status == 413 and refused.value.message.startswith("The prompt has 11 characters")
    with caplog.at_level(logging.INFO, logger="minigate.plugins.prompt_limit"):
        asyncio.run(shutdown_plugins(registry))
    assert "refused 1 prompt(s) over 10 characters" in caplog.text


def test_the_example_plugin_refuses_unknown_options() -> None:
    message = issues_of(config([EXAMPLE], prompt_limit={"options": {"max_char": 10}}))
    assert "plugin 'prompt_limit'" in message and "failed in init" in message and "max_char" in message


def test_the_example_plugin_refuses_long_prompts_in_a_running_gateway(
    inprocess_factory: Callable[..., InProcessGateway],
) -> None:
    server = inprocess_factory(config([EXAMPLE], prompt_limit={"options": {"max_chars": 20}}))
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    with server.new_http(headers=auth) as http:
        ok = http.post(
            "/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": "hi"}]}
        )
        assert ok.status_code == 200, ok.text
        long = {"model": "default", "messages": [{"role": "user", "content": "x" * 21}]}
        refused = http.post("/v1/chat/completions", json=long)
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["code"] == "prompt_too_long"
        assert (
            error["message"]
            == "Plugin 'prompt_limit' refused this: The prompt has 21 characters; this gateway takes 20 at most."
        )


def test_plugins_written_against_the_old_import_paths_still_import() -> None:
    """``minigate.gateway.plugins`` and ``minigate.gateway.workflow_steps`` were modules before the regrouping; plugins
    import them."""
    import minigate.gateway.config.workflow_steps as steps
    import minigate.gateway.plugins.hookspecs as hookspecs
    from minigate.gateway.plugins import Event, PluginAPI, Rejected, UILink
    from minigate.gateway.workflow_steps import Step, StepContext

    assert (Event, PluginAPI, Rejected, UILink) == (
        hookspecs.Event,
        hookspecs.PluginAPI,
        hookspecs.Rejected,
        hookspecs.UILink,
    )
    assert (Step, StepContext) == (steps.Step, steps.StepContext)

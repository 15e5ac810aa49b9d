"""A plugin that uses every hook, for minigate's tests. Inert unless its options say ``"active": true``, since once
installed it is loaded by every gateway in the test environment."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from litestar import Response, get

from minigate.gateway.config.workflow_steps import Step, StepContext
from minigate.gateway.plugins.loader import Event, PluginAPI, Rejected
from minigate.providers.fake import FakeProvider, FakeProviderConfig
from minigate.providers.registry import ProviderContext, ProviderType


class Shout(Step, kw_only=True):
    """``shout``: the text in capitals, then ``marks`` exclamation marks."""

    name: ClassVar[str] = "shout"
    marks: int = 1

    async def run(self, context: StepContext, text: str) -> str:
        return text.upper() + "!" * self.marks


def _echo(name: str, config: FakeProviderConfig, context: ProviderContext) -> FakeProvider:
    return FakeProvider(name, config)


@get("/testplugin/hello", include_in_schema=False)
async def hello() -> Response[bytes]:
    """A route the plugin adds."""
    return Response(b'{"hello": "from testplugin"}', media_type="application/json")


class TestPlugin:
    """Registers a provider type, a step type, a route and a UI link; tags answers; refuses 'forbidden'."""

    __test__ = False  # not a pytest test class

    def init(self, api: PluginAPI) -> None:
        self.active = bool(api.config.get("active"))
        self.shutdown_file = api.config.get("shutdown_file")
        api.providers.register(ProviderType("testplugin-echo", FakeProviderConfig, _echo))
        api.steps.register(Shout)
        if self.active:
            api.add_route(hello)
            api.add_link("Test plugin", "/testplugin/hello")
        else:
            self.process = None  # type: ignore[assignment]  # inactive: keep the request path free of it

    def process(self, event: Event) -> None:
        if event.stage == "request":
            if "forbidden" in str(event.body.get("messages")):
                raise Rejected("the word 'forbidden' is not allowed here", status=422, code="forbidden_word")
            if event.body.get("model") == "testplugin-shortcut":
                event.body["model"] = "default"  # plugins may change the model before routing
        elif event.stage in ("response", "chunk"):
            event.body["testplugin"] = {"stage": event.stage, "provider_type": event.provider_type}

    def shutdown(self) -> None:
        if self.shutdown_file:
            Path(self.shutdown_file).write_text("shut down")

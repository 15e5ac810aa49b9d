"""Name resolution: agents, default, aliases, provider/model, bare names, unknown names."""

from __future__ import annotations

from typing import Any

from minigate.gateway.plugins.loader import builtin_extensions, configure
from minigate.gateway.routing.routes import Deployment, RouteTable


def table(**router: Any) -> RouteTable:
    raw = {
        "agents": {
            "defaults": {"model": {"primary": "a/m1", "fallbacks": ["b/m2"]}},
            "coder": {"model": {"primary": "b/coder", "fallback": "a/m1"}},
        },
        "models": {
            "providers": {
                "a": {"endpoint": "http://127.0.0.1:1/v1", "models": ["m1", "shared"]},
                "b": {"endpoint": "http://127.0.0.1:2/v1"},
            },
            "aliases": {"gpt-4": "a/m1", "code": "coder"},
        },
        "router": router,
    }
    config = configure(raw, builtin_extensions(), env={})
    return RouteTable(config, {"a": ["m1", "shared"], "b": ["shared", "only-b"]})


def test_agents_and_default() -> None:
    routes = table()
    route = routes.resolve("default")
    assert route is not None and route.agent == "defaults"
    assert route.chain == (Deployment("a", "m1"), Deployment("b", "m2"))
    coder = routes.resolve("coder")
    assert coder is not None and [d.ref for d in coder.chain] == ["b/coder", "a/m1"]


def test_aliases_references_and_bare_names() -> None:
    routes = table()
    assert [d.ref for d in routes.resolve("gpt-4").chain] == ["a/m1"]  # type: ignore[union-attr]
    code = routes.resolve("code")
    assert code is not None and code.agent == "coder"
    assert [d.ref for d in routes.resolve("b/any/thing").chain] == ["b/any/thing"]  # type: ignore[union-attr]
    assert [d.ref for d in routes.resolve("only-b").chain] == ["b/only-b"]  # type: ignore[union-attr]
    assert routes.resolve("shared") is None  # listed by two providers: ambiguous
    assert routes.resolve("c/m") is None


def test_unknown_names_follow_the_default_only_if_configured() -> None:
    assert table().resolve("whatever") is None
    route = table(unknown_model="default").resolve("whatever")
    assert route is not None and route.agent == "defaults" and route.requested == "whatever"


def test_listing_names_every_route_once() -> None:
    ids = [ident for ident, _, _ in table().listing()]
    assert ids[0] == "default" and len(ids) == len(set(ids))
    assert {"coder", "gpt-4", "code", "a/m1", "b/m2", "b/coder", "b/shared"} <= set(ids)

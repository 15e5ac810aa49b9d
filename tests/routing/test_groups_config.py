"""Model groups in the config (what is refused, and how it is said), in /v1/models and on the models page; the
expansion of a chain's groups into the order one request tries them."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from minigate.gateway.config.schema import ConfigError
from minigate.gateway.plugins.loader import builtin_extensions, configure
from minigate.gateway.routing.groups import Group, LoadBook, expand
from minigate.gateway.routing.routes import Deployment, RouteTable
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.web.helpers import PASSWORD, WebClient


def config(primary: Any, *fallbacks: Any) -> dict[str, Any]:
    """Agent ``qwen`` over two in-process fake providers, ``a`` and ``b``, both listing ``qwen``."""
    model: dict[str, Any] = {"primary": primary}
    if fallbacks:
        model["fallbacks"] = list(fallbacks)
    providers = {name: {"type": "fake", "models": ["qwen"]} for name in ("a", "b")}
    return {"agents": {"qwen": {"model": model}}, "models": {"providers": providers}}


def issues(primary: Any, *fallbacks: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as refused:
        configure(config(primary, *fallbacks), builtin_extensions(), env={})
    return refused.value.issues


P = "agents.qwen.model.primary"


@pytest.mark.parametrize(
    ("group", "path", "words"),
    [
        ({"group": []}, P + ".group", "at least one deployment"),
        ({"group": ["a/qwen", "nobox/qwen"]}, P + ".group[1]", "unknown provider 'nobox'"),
        ({"group": ["a/qwen", "b/qwen"], "strategy": "fastest"}, P + ".strategy", "latency"),
        (
            {"group": [{"ref": "a/qwen", "weight": 0}, "b/qwen"]},
            P + ".group[0].weight",
            "positive",
        ),
        ({"group": [{"ref": "a/qwen", "weight": -2}]}, P + ".group[0].weight", "positive"),
        ({"group": ["a/qwen", {"group": ["b/qwen"]}]}, P + ".group[1]", "cannot contain a group"),
        ({"group": ["a/qwen", "a/qwen"]}, P + ".group[1]", "listed twice"),
        (
            {"group": [{"ref": "a/qwen", "weight": 2}], "strategy": "latency"},
            P + ".group[0].weight",
            "only to strategy 'weighted'",
        ),
        ({"group": ["a/qwen", "b/nope"]}, P + ".group[1]", "does not list model 'nope'"),
    ],
)
def test_bad_groups_are_refused_with_their_path(group: dict[str, Any], path: str, words: str) -> None:
    found = issues(group)
    assert any(where == path and words in message for where, message in found), found


def test_a_bad_group_among_the_fallbacks_is_named_there() -> None:
    found = issues("a/qwen", {"group": ["b/qwen"], "strategy": "random"})
    assert found == [
        (
            "agents.qwen.model.fallbacks[0].strategy",
            "unknown strategy 'random' (strategies: least_busy, weighted, latency)",
        )
    ]


def test_good_groups_become_one_tagged_run_in_the_chain() -> None:
    weighted = {"group": [{"ref": "a/qwen", "weight": 3}, "b/qwen"]}
    parsed = configure(config(weighted, {"group": ["b/qwen", "a/qwen"], "strategy": "latency"}), builtin_extensions())
    table = RouteTable(parsed, {"a": ["qwen"], "b": ["qwen"]})
    route = table.resolve("qwen")
    assert route is not None and route.grouped
    assert [d.ref for d in route.chain] == ["a/qwen", "b/qwen", "b/qwen", "a/qwen"]
    first, second = route.chain[0].group, route.chain[2].group
    assert first is route.chain[1].group and first is not None and first.strategy == "weighted"
    assert second is not None and second.strategy == "latency" and second is not first
    (listed,) = [d for name, kind, d in table.listing() if name == "qwen"]
    assert listed["chain"] == [
        {"group": [{"ref": "a/qwen", "weight": 3.0}, {"ref": "b/qwen", "weight": 1.0}], "strategy": "weighted"},
        {"group": ["b/qwen", "a/qwen"], "strategy": "latency"},
    ]


def test_expand_orders_each_group_and_puts_cooling_members_last() -> None:
    busy = Group("least_busy")
    chain = [Deployment("x", "m", busy), Deployment("y", "m", busy), Deployment("z", "m", busy), Deployment("f", "m")]
    load = LoadBook(random.Random(1))
    load.sent("x/m")
    load.sent("z/m")
    load.sent("z/m")
    order = expand(chain, load, lambda ref: 0.0, False)
    assert [d.ref for d in order] == ["y/m", "x/m", "z/m", "f/m"]
    cooling = expand(chain, load, lambda ref: 5.0 if ref == "y/m" else 0.0, False)
    assert [d.ref for d in cooling] == ["x/m", "z/m", "y/m", "f/m"]


def test_weighted_draws_follow_the_weights() -> None:
    group = Group("weighted", {"a": 3.0, "b": 1.0})
    load = LoadBook(random.Random(18))
    firsts = Counter(["a", "b"][group.order(["a", "b"], load, False)[0]] for _ in range(4000))
    assert 2900 <= firsts["a"] <= 3100  # 3000 expected, sd 27


def test_latency_explores_now_and_then() -> None:
    group = Group("latency")
    load = LoadBook(random.Random(2))
    load.answered("slow", 1.0, False)
    load.answered("fast", 0.1, False)
    firsts = Counter(["slow", "fast"][group.order(["slow", "fast"], load, False)[0]] for _ in range(2000))
    assert 40 <= firsts["slow"] <= 170  # 5% of 2000 = 100 expected


@pytest.fixture
def grouped_app(
    inprocess_factory: Callable[..., InProcessGateway], monkeypatch: pytest.MonkeyPatch
) -> Iterator[InProcessGateway]:
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    raw = config({"group": ["a/qwen", "b/qwen"]}, "b/qwen")
    raw["agents"]["plain"] = {"model": {"primary": "a/qwen"}}
    yield inprocess_factory(raw)


def test_models_list_and_page_show_groups(grouped_app: InProcessGateway) -> None:
    listed = grouped_app.http.get("/v1/models", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    (agent,) = [m for m in listed["data"] if m["id"] == "qwen"]
    assert agent["minigate"]["chain"] == [{"group": ["a/qwen", "b/qwen"], "strategy": "least_busy"}, "b/qwen"]
    web = WebClient(grouped_app)
    try:
        assert web.login().status_code == 303
        page = web.get("/models")
        assert page.status_code == 200
        assert "group (least_busy): a/qwen, b/qwen" in page.text
        assert "shown read-only" in page.text and page.text.count('action="/models/chain"') == 1  # plain's form only
        saved = web.post("/models/chain", {"agent": "qwen", "op": "save", "chain": ["a/qwen"]})
        assert saved.status_code == 422 and "cannot change" in saved.text
    finally:
        web.close()

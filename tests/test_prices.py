"""Prices and cost: the shipped list prices, ``models.prices`` over them, local models free, config errors, and the
cost every usage row stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from minigate.gateway.config.prices import PriceTable, check_prices, shipped_prices
from minigate.gateway.config.schema import ConfigError, parse_config
from minigate.gateway.plugins.loader import Extensions
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

pytestmark = pytest.mark.fast


def test_shipped_prices_carry_their_date_and_the_usual_models() -> None:
    taken, prices = shipped_prices()
    assert taken == "2025-11"
    table = PriceTable({}, frozenset())
    assert table.price("openai", "gpt-4o") == (2.5, 10.0)
    assert table.price("openai", "gpt-4o-mini") == (0.15, 0.6)  # not gpt-4o's: the longer pattern comes first
    assert table.price("openai", "gpt-4o-2024-08-06") == (2.5, 10.0)  # a dated snapshot
    assert table.price("openai", "gpt-4.1-nano") == (0.1, 0.4)
    assert table.price("openai", "o4-mini") == (1.1, 4.4)
    assert table.price("anthropic", "claude-3-5-sonnet-20241022") == (3.0, 15.0)
    assert table.price("anthropic", "claude-opus-4-1-20250805") == (15.0, 75.0)
    assert table.price("anthropic", "claude-opus-4-5-20251101") == (5.0, 25.0)
    assert table.price("router", "openai/gpt-4o-mini") == (0.15, 0.6)  # through a router upstream's name
    assert table.price("openai", "my-finetune") is None  # unpriced
    assert len(prices) >= 15


def test_config_overrides_and_local_models() -> None:
    configured = check_prices(
        {"openai/gpt-4o": {"input": 2, "output": 8}, "llama*": {"input": 0.5, "output": 0.5}}, issues := []
    )
    assert issues == []
    table = PriceTable(configured, frozenset({"local"}))
    assert table.price("openai", "gpt-4o") == (2.0, 8.0)  # the config's price wins over the shipped one
    assert table.price("other", "gpt-4o") == (2.5, 10.0)  # another provider's gpt-4o keeps the shipped price
    assert table.price("local", "gpt-4o") == (0.0, 0.0)  # a local model is free unless priced...
    assert table.price("local", "llama3") == (0.5, 0.5)  # ...by the config
    assert table.cost("openai", "gpt-4o", 1_000_000, 500_000) == 6.0
    assert table.cost("openai", "gpt-4o", None, None) == 0.0
    assert table.cost("openai", "my-finetune", 10, 10) is None


@pytest.mark.parametrize(
    "entry",
    [{"input": -1, "output": 1}, {"input": 1}, {"input": "1", "output": 1}, {"input": 1, "output": 1, "cached": 1}, 3],
)
def test_bad_prices_are_refused_naming_their_path(entry: Any) -> None:
    raw = {"models": {"providers": {"local": {"type": "fake"}}, "prices": {"local/echo": entry}}}
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, Extensions.builtin())
    assert refused.value.issues[0][0] == "models.prices.local/echo"
    assert "per million tokens" in refused.value.issues[0][1]


def test_usage_rows_store_the_cost(inprocess_factory: Callable[..., InProcessGateway]) -> None:
    config = {
        "agents": {"defaults": {"model": {"primary": "local/echo"}}},
        "models": {
            "providers": {"local": {"type": "fake", "models": ["echo", "free"]}},
            "prices": {"local/echo": {"input": 1.0, "output": 3.0}},
        },
    }
    app = inprocess_factory(config)
    for model in ("default", "local/free"):
        answer = app.http.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            json={"model": model, "messages": [{"role": "user", "content": "hi there"}]},
        )
        assert answer.status_code == 200
    rows = app.wait_rows(2)
    # 2 prompt tokens at $1 and 4 completion tokens at $3 per million
    assert [(r["model"], r["cost"]) for r in rows] == [("echo", 14 / 1_000_000), ("free", 0.0)]
    listed = app.http.get("/admin/api/prices", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert listed["configured"] == {"local/echo": {"input": 1.0, "output": 3.0}}
    assert listed["shipped"]["gpt-4o*"] == {"input": 2.5, "output": 10.0}
    assert listed["free_local_providers"] == ["local"]

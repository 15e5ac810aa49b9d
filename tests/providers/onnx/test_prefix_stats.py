"""The prefix cache seen from outside the worker: after two turns of one conversation, ``/metrics``, the models
page and the admin API show a hit and reused tokens (the tiny model, in-process gateway)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.providers.onnx.helpers import TINY, local_config
from tests.web.helpers import WebClient

SYSTEM = "You are a helpful assistant. " * 8
AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}


def _config(models_dir: Path, **local: Any) -> dict[str, Any]:
    return local_config(models_dir, 512, **local)


def _two_turns(web: WebClient) -> None:
    """One conversation of two turns, the second resending the first with its answer."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello there, how are you?"}]
    for turn in ("tell me more about that", None):
        body = {"model": f"local/{TINY}", "messages": messages, "max_tokens": 12, "temperature": 0}
        answer = web.http.post("/v1/chat/completions", json=body, headers=AUTH)
        assert answer.status_code == 200, answer.text
        if turn is not None:
            messages += [{"role": "assistant", "content": answer.json()["choices"][0]["message"]["content"]}]
            messages += [{"role": "user", "content": turn}]


def _cache_row(web: WebClient) -> dict[str, int]:
    """The tiny model's ``prefix_cache`` in the admin API's model list."""
    listed = web.http.get("/admin/api/models", headers=AUTH).json()
    local = next(p for p in listed["providers"] if p["name"] == "local")
    cache: dict[str, int] = next(m for m in local["models"] if m["id"] == TINY)["prefix_cache"]
    return cache


def _series(text: str, metric: str) -> float:
    """The value of ``metric`` for the tiny model in an exposition text."""
    found = re.search(rf'^{metric}\{{provider="local",model="{re.escape(TINY)}"\}} (\S+)$', text, re.M)
    assert found, f"{metric} missing from /metrics"
    return float(found.group(1))


def test_metrics_and_the_models_page_show_prefix_cache_hits(
    inprocess_factory: Callable[..., InProcessGateway],
    admin: Callable[[InProcessGateway], WebClient],
    models_dir: Path,
) -> None:
    gateway = inprocess_factory(_config(models_dir, prefix_cache="256MiB"))
    web = admin(gateway)
    try:
        _two_turns(web)
        text = web.http.get("/metrics", timeout=10).text
        assert "# TYPE minigate_local_prefix_hits_total counter" in text
        assert _series(text, "minigate_local_prefix_lookups_total") == 2
        assert _series(text, "minigate_local_prefix_hits_total") == 1
        reused = _series(text, "minigate_local_prefix_reused_tokens_total")
        prefilled = _series(text, "minigate_local_prefilled_tokens_total")
        assert reused > 0 and prefilled > 0
        assert _series(text, "minigate_local_prefix_evictions_total") == 0
        assert 0 < _series(text, "minigate_local_prefix_cache_bytes") <= 256 << 20
        assert _series(text, "minigate_local_prefix_cache_budget_bytes") == 256 << 20

        # The page reads what the worker sent with its tokens (no request to the worker while rendering).
        page = html.unescape(web.get("/models").text)
        shown = re.search(r"prefix_cache: 1 hits of 2 lookups, ([\d,]+) tokens reused, ([\d,]+) prefilled", page)
        assert shown, "the models page shows no prefix cache hit"
        assert int(shown.group(1).replace(",", "")) == reused
        cache = _cache_row(web)
        assert (cache["hits"], cache["lookups"], cache["reused_tokens"]) == (1, 2, reused)
        assert cache["budget_bytes"] == 256 << 20 and 0 < cache["bytes"] <= cache["budget_bytes"]
    finally:
        web.close()


def test_a_model_without_a_prefix_cache_shows_none(
    inprocess_factory: Callable[..., InProcessGateway],
    admin: Callable[[InProcessGateway], WebClient],
    models_dir: Path,
) -> None:
    gateway = inprocess_factory(_config(models_dir, prefix_cache="off"))
    web = admin(gateway)
    try:
        _two_turns(web)
        text = web.http.get("/metrics", timeout=10).text
        assert f'minigate_local_active_requests{{provider="local",model="{TINY}"}}' in text
        assert "minigate_local_prefix_hits_total{" not in text
        assert _series(text, "minigate_local_prefilled_tokens_total") > 0  # counted with or without a cache
        assert "prefix_cache:" not in html.unescape(web.get("/models").text)
    finally:
        web.close()


def test_settled_tokens_reach_the_gateway_while_the_worker_is_idle(
    inprocess_factory: Callable[..., InProcessGateway],
    admin: Callable[[InProcessGateway], WebClient],
    models_dir: Path,
) -> None:
    gateway = inprocess_factory(_config(models_dir, prefix_cache="256MiB"))
    web = admin(gateway)
    try:
        _two_turns(web)
        deadline, settled = time.monotonic() + 30, 0
        # The last answer's tokens are prefilled again while idle; the worker says so without being asked (the
        # admin API reads what it sent).
        while settled == 0 and time.monotonic() < deadline:
            settled = _cache_row(web)["settled_tokens"]
            time.sleep(0.05)
        assert settled > 0
    finally:
        web.close()


async def test_every_process_sharing_an_engine_sees_its_prefix_cache(tmp_path: Path, make_provider: Any) -> None:
    """Under ``serve --workers``, the engine host passes the counters the engine sends to every gateway process
    holding it, also to one that sent none of the requests."""
    from minigate.providers.onnx.engine_host import EngineHost
    from tests.providers.onnx.test_prefix_cache import TURNS, _conversation

    host = EngineHost(tmp_path / "engines.sock")
    await host.start()
    try:
        talker = await make_provider(engine_host=str(host.path), worker_options={"settle_delay": 0.0})
        watcher = await make_provider(engine_host=str(host.path), worker_options={"settle_delay": 0.0})
        await watcher.load(TINY)
        await _conversation(talker, TURNS[:2], max_tokens=8, pause=0.2)
        seen = watcher.loaded()[TINY].cache_stats
        assert seen["prefix_hits"] == 1 and seen["prefix_reused_tokens"] > 0
        assert seen["prefix_settled_tokens"] > 0  # sent alone, after an idle settle, with no tokens for anyone
        assert talker.loaded()[TINY].cache_stats == seen
    finally:
        await host.close()

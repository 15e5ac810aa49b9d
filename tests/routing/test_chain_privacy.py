"""The chain's privacy rule: a capability refusal hands the request on to a remote deployment only where the agent
allows it; other local deployments may still be tried, and faults fall back as before."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest

from minigate.gateway.config.sections import CooldownConfig
from minigate.gateway.routing.chain import ChainExhausted, run_chain
from minigate.gateway.routing.cooldowns import HealthBook
from minigate.gateway.routing.routes import Deployment, Route
from minigate.providers.base import Provider, ProviderError, UpstreamUnavailable
from minigate.providers.fake import FakeProvider, FakeProviderConfig

LOCAL_A, LOCAL_B, REMOTE = Deployment("local", "a"), Deployment("local2", "b"), Deployment("cloud", "c")
PROVIDERS: dict[str, Provider] = {
    name: FakeProvider(name, FakeProviderConfig()) for name in ("local", "local2", "cloud")
}


def _refusal() -> ProviderError:
    return ProviderError(
        "this model accepts text only, not 'image_url' content",
        status=400,
        type="invalid_request_error",
        code="unsupported_content",
        param="messages[0].content",
        cooldown=False,
        capability=True,
    )


async def _run(route: Route, failures: dict[Deployment, ProviderError]) -> tuple[Deployment | None, list[str], int]:
    """Run the chain; returns who answered (None if nobody), who was tried, and the client's status."""
    tried: list[str] = []

    async def attempt(provider: Provider, deployment: Deployment) -> str:
        tried.append(deployment.ref)
        if deployment in failures:
            raise failures[deployment]
        return "answer"

    try:
        deployment, _, _ = await run_chain(
            route, PROVIDERS, HealthBook(CooldownConfig()), time.monotonic() + 5, attempt
        )
    except ChainExhausted as exhausted:
        return None, tried, exhausted.error.status
    return deployment, tried, 200


def _route(*chain: Deployment, allowed: bool = False) -> Route:
    return Route("agent", "agent", chain, frozenset({"local", "local2"}), allowed)


async def test_a_capability_refusal_does_not_leave_the_machine() -> None:
    answered, tried, status = await _run(_route(LOCAL_A, REMOTE), {LOCAL_A: _refusal()})
    assert (answered, tried, status) == (None, ["local/a"], 400)


async def test_the_refusal_itself_is_what_the_client_gets() -> None:
    route = _route(LOCAL_A, REMOTE)
    with pytest.raises(ChainExhausted) as info:
        await run_chain(route, PROVIDERS, HealthBook(CooldownConfig()), time.monotonic() + 5, _failing(_refusal()))
    error = info.value.error
    assert (error.status, error.code, error.param) == (400, "unsupported_content", "messages[0].content")
    assert "text only" in error.message and [h.deployment for h in info.value.hops] == [LOCAL_A]


def _failing(err: ProviderError) -> Callable[[Provider, Deployment], Awaitable[str]]:
    async def attempt(provider: Provider, deployment: Deployment) -> str:
        raise err

    return attempt


async def test_capability_fallback_lets_it_go_remote() -> None:
    answered, tried, _ = await _run(_route(LOCAL_A, REMOTE, allowed=True), {LOCAL_A: _refusal()})
    assert answered == REMOTE and tried == ["local/a", "cloud/c"]


async def test_another_local_deployment_is_still_tried() -> None:
    answered, tried, _ = await _run(_route(LOCAL_A, LOCAL_B, REMOTE), {LOCAL_A: _refusal()})
    assert answered == LOCAL_B and tried == ["local/a", "local2/b"]
    # The second local one refuses too: still nothing leaves, and the first refusal is the answer.
    answered, tried, status = await _run(_route(LOCAL_A, LOCAL_B, REMOTE), {LOCAL_A: _refusal(), LOCAL_B: _refusal()})
    assert (answered, tried, status) == (None, ["local/a", "local2/b"], 400)


async def test_faults_fall_back_to_remote_as_before() -> None:
    """A local deployment that is down is a fault, not a refusal: the chain goes on as configured."""
    down = UpstreamUnavailable("worker died", code="worker_died")
    answered, tried, _ = await _run(_route(LOCAL_A, REMOTE), {LOCAL_A: down})
    assert answered == REMOTE and tried == ["local/a", "cloud/c"]

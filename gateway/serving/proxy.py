"""Serving one call: route it along its chain, answer with a typed :class:`~minigate.gateway.serving.events.Reply`,
store its row.

The client's body is forwarded unchanged apart from ``model`` and the routing fields a client must never
control (``api_base``, ``base_url``, ``api_key``, extra headers). For streams the upstream is always asked for
usage, and the usage chunk is removed again when the client did not ask for it, so every row has real token
counts. The row is committed before the answer is handed over. Streaming answers are served by
:mod:`minigate.gateway.serving.streaming` with the same :class:`Call`. A call made for another protocol may carry
the client's own request (:class:`Passthrough`): a deployment that speaks that protocol gets it instead of the
chat body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio

from minigate.gateway.core.errors import GatewayError, ModelNotFound
from minigate.gateway.core.tokens import TokenCounts, checked_usage, token_counts
from minigate.gateway.ops.limits import Scope, Ticket, allowed_route, person_scope
from minigate.gateway.ops.observe import Trace, new_request_id
from minigate.gateway.plugins.loader import Pipeline, plugin_hooks
from minigate.gateway.routing.chain import ChainExhausted, Hop, run_chain
from minigate.gateway.routing.cooldowns import HealthBook
from minigate.gateway.routing.routes import Deployment, Route, RouteTable, check_model_name
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.serving.events import Outcome, Reply, native_counts
from minigate.gateway.storage import UsageRecord, UsageWriteError
from minigate.providers.base import Endpoint, Provider, ProviderError, ProviderRequest

# The helpers after ``start_call`` are shared with minigate.gateway.serving.streaming, which serves the streaming half
# of a call.
__all__ = [
    "ROUTING_FIELDS",
    "SHUTDOWN",
    "Call",
    "Passthrough",
    "cancelled",
    "check_serves_endpoint",
    "failed",
    "serve_json",
    "start_call",
    "uncancel",
]

log = logging.getLogger("minigate")

# Fields that would let a client choose where, or with which credentials, the upstream is called.
ROUTING_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "extra_headers",
        "headers",
        "custom_llm_provider",
        "organization",
        "azure_ad_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        # SDK client options, not body fields: an upstream that is itself a gateway might honour them
        "extra_query",
        "extra_body",
        "default_headers",
        "default_query",
        "api_type",
    }
)

SHUTDOWN = "the gateway shut down before the answer was complete"


@dataclass(slots=True)
class Passthrough:
    """The client's own request in a protocol some providers speak natively (``"responses"``, ``"messages"``).

    A deployment whose provider lists ``endpoint`` among its endpoints is sent ``body`` (routing fields removed,
    ``model`` set to the deployment's) and ``headers``; any other is sent the call's chat body.
    """

    endpoint: Endpoint
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class Call:
    """One client request on its way through the gateway.

    ``providers``, ``health`` and ``routes`` are the gateway's as they were when the call started: a config
    reload swaps the gateway's references, and this call finishes on the ones it began with.
    """

    gateway: Gateway
    endpoint: Endpoint
    route: Route
    forward: dict[str, Any]
    key_id: int | None
    providers: dict[str, Provider]
    health: HealthBook
    routes: RouteTable
    stream: bool = False
    client_usage: bool = False
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.monotonic)
    deadline: float = 0.0
    trace: Trace | None = None
    task: asyncio.Task[Any] | None = None  # what a shutdown cancels (see minigate.gateway.ops.drain)
    cut: bool = False  # set when a shutdown ended the call
    ticket: Ticket | None = None  # the key's admission under its policy (minigate.gateway.ops.limits)
    hooks: Pipeline | None = None  # the plugins' process hooks; None when no plugin has one
    label: str | None = None  # the usage row's endpoint when a translated protocol (responses, messages) made the call
    native: Passthrough | None = None  # the client's own request, for deployments that speak its protocol
    user_id: int | None = None  # the person whose key (or web session) it is, for the usage row

    def serves_natively(self, provider: Provider) -> bool:
        """Whether ``provider`` is sent the client's own request rather than the chat body."""
        return self.native is not None and self.native.endpoint in provider.endpoints

    def provider_request(self, deployment: Deployment, provider: Provider | None = None) -> ProviderRequest:
        """The body aimed at one deployment: the client's own when its ``provider`` speaks the client's protocol."""
        if provider is not None and self.native is not None and self.serves_natively(provider):
            native = self.native
            body = {**native.body, "model": deployment.model}
            return ProviderRequest(
                native.endpoint,
                deployment.model,
                body,
                self.stream,
                self.deadline,
                self.request_id,
                headers=dict(native.headers),
            )
        body = dict(self.forward)
        body["model"] = deployment.model
        if self.hooks is not None:  # plugins see (and may change or refuse) what leaves for this deployment
            body = self.hooks.upstream(self, deployment, body)
        return ProviderRequest(self.endpoint, deployment.model, body, self.stream, self.deadline, self.request_id)

    def provider_type(self, provider: str) -> str | None:
        """The registered type of ``provider``, as the plugins' events name it."""
        return self.gateway.provider_type(provider)

    def row(self, status: int, **fields: Any) -> UsageRecord:
        """A usage row for this call."""
        return UsageRecord(
            request_id=self.request_id,
            endpoint=self.label or self.endpoint,
            requested_model=self.route.requested,
            agent=self.route.agent,
            key_id=self.key_id,
            user_id=self.user_id,
            status=status,
            streamed=self.stream,
            latency_ms=(time.monotonic() - self.started) * 1000,
            **fields,
        )

    async def store(
        self,
        status: int,
        deployment: Deployment | None,
        hops: list[Hop],
        *,
        error: str | None = None,
        ttft_ms: float | None = None,
        usage: Any = None,
    ) -> None:
        """Commit this call's usage row (and count it); storage trouble is logged, never a failed answer.

        Returns once the row is committed, or kept in memory by the writer while the database refuses rows.
        """
        tokens = self._tokens(deployment, usage)
        cost = self._cost(deployment, tokens)
        self.gateway.metrics.call(
            deployment, deployment is not None and self.routes.listed(deployment), hops, tokens, ttft_ms
        )
        trace = self.trace
        if trace is not None:
            trace.status, trace.fallbacks, trace.error = status, len(hops), error
            if deployment is not None:
                trace.provider, trace.model = deployment.provider, deployment.model
        row = self.row(
            status,
            provider=deployment.provider if deployment else None,
            model=deployment.model if deployment else None,
            fallbacks=len(hops),
            hops=[h.record() for h in hops] or None,
            error=error,
            ttft_ms=ttft_ms,
            cost=cost,
            **tokens,
        )
        try:
            # False: the database refuses rows for now and this one waits in memory (the writer logs the outage).
            await self.gateway.usage.record(row)
        except UsageWriteError as err:  # already logged with the row's contents when the database was to blame
            log.error("usage row %s was not stored: %s", self.request_id, err, extra={"event": "usage_not_stored"})
        except Exception:
            log.exception("usage row %s was not stored", self.request_id)

    def _cost(self, deployment: Deployment | None, tokens: TokenCounts) -> float | None:
        """What the answer cost (None: unpriced), counted against the key's budgets; its concurrency slot ends."""
        if self.ticket is not None:
            self.ticket.release()
        prompt, completion = tokens["prompt_tokens"], tokens["completion_tokens"]
        cost = (
            None
            if deployment is None
            else self.gateway.config.prices.cost(deployment.provider, deployment.model, prompt, completion)
        )
        if (limits := self.gateway.limits) is not None:
            used = tokens["total_tokens"] or (prompt or 0) + (completion or 0)
            if self.key_id is not None:
                limits.used(self.key_id, used, cost)
            if self.user_id is not None:  # the person's own budgets, over all their keys and their web chat
                limits.used(person_scope(self.user_id), used, cost)
        return cost

    def _tokens(self, deployment: Deployment | None, usage: Any) -> TokenCounts:
        """The checked token counts of the answer's ``usage`` as the upstream sent it (see
        ``minigate.gateway.core.tokens``); invalid ones are counted and logged once per deployment."""
        counts, problems = token_counts(usage)
        if problems and deployment is not None:
            self.gateway.metrics.rejected_counts(deployment, self.routes.listed(deployment), problems)
        return counts


def start_call(
    gateway: Gateway,
    endpoint: Endpoint,
    parsed: Any,
    raw: dict[str, Any],
    key_id: int | None,
    trace: Trace | None = None,
    label: str | None = None,
    native: Passthrough | None = None,
    user_id: int | None = None,
) -> Call:
    """Resolve the route and prepare the forwarded body; 404 when no route knows the model; 403 and 429 from the
    policies of the key and of its person (``user_id``: the person of a web chat, whose policy the caller loaded).

    ``trace`` (the request wrapper's, see ``minigate.gateway.ops.observe``) gives the call its request id and learns who
    answered. The x-request-id response header is added by that wrapper. ``label`` names the client's protocol
    in the usage row when it was translated onto ``endpoint`` (``"responses"``, ``"messages"``); ``native`` is the
    client's request in that protocol, passed through to deployments that speak it. Not while a plugin has a
    ``process`` hook: plugins see chat bodies and chunks, so then every deployment gets the translation.
    """
    if trace is not None:  # a refused request's row names them
        trace.key_id, trace.asked = key_id, parsed.model if isinstance(parsed.model, str) else None
    check_model_name(parsed.model)  # before plugins, routing or any upstream see it
    routes = gateway.routes
    if (hooks := plugin_hooks(gateway.extensions)) is not None:  # plugins see the request before it is routed
        parsed = hooks.request(endpoint, parsed, raw, key_id, trace.request_id if trace else None)
    route = routes.resolve(parsed.model)
    if route is None:
        raise ModelNotFound(parsed.model)
    keys = gateway.keys
    person = user_id if user_id is not None else keys.user_of(key_id)  # read with the key (cached), so no query here
    scopes = []
    if key_id is not None and (policy := keys.policies.get(key_id)) is not None:  # cached with the key
        scopes.append(Scope(key_id, policy))
    if person is not None and (policy := keys.person_policy(person)) is not None:
        scopes.append(Scope(person_scope(person), policy))
    ticket = None
    for scope in scopes:  # 403 and 429 before any upstream is called
        route = allowed_route(scope.policy, route, scope.whose)
    if scopes and gateway.limits is not None:
        ticket = gateway.limits.admit(scopes)
        if trace is not None and ticket.headers:
            trace.headers = ticket.headers
    forward = {k: v for k, v in raw.items() if k not in ROUTING_FIELDS}
    stream = bool(getattr(parsed, "stream", False))
    call = Call(gateway, endpoint, route, forward, key_id, gateway.providers, gateway.health, routes, stream=stream)
    call.ticket = ticket
    if trace is not None:
        call.trace, call.request_id = trace, trace.request_id
    call.hooks, call.label = hooks, label
    call.user_id = person
    if native is not None and hooks is None:
        body = {k: v for k, v in native.body.items() if k not in ROUTING_FIELDS}
        call.native = Passthrough(native.endpoint, body, native.headers)
    call.deadline = call.started + gateway.config.router.timeout
    if stream:
        options = raw.get("stream_options")
        call.client_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        forward["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return call


def check_serves_endpoint(provider: Provider, call: Call, deployment: Deployment) -> None:
    """Refuse (400, no fallback) a deployment whose provider does not serve the call's endpoint (or its native
    protocol)."""
    if call.endpoint not in provider.endpoints and not call.serves_natively(provider):
        raise ProviderError(
            f"{deployment.ref} does not serve /v1/{call.endpoint}",
            status=400,
            code="unsupported_endpoint",
            cooldown=False,
        )


async def failed(call: Call, err: GatewayError, hops: list[Hop] | None = None) -> GatewayError:
    """Store the row of a call that ends with ``err`` (even while being cancelled); returns ``err`` to raise."""
    with anyio.CancelScope(shield=True):
        await call.store(err.status, None, hops or [], error=err.message)
    return err


def uncancel() -> None:
    """Take back the cancellation of the current task: a shutdown's cut is answered, not propagated."""
    # A shutdown's cut is answered with an error, not propagated as a cancellation of the request.
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def cancelled(call: Call, hops: list[Hop]) -> GatewayError | None:
    """A call cancelled before it had an answer: the 503 to raise when a shutdown cut it, None when the client
    left (the caller re-raises the cancellation). The usage row is stored either way."""
    if not call.cut:
        with anyio.CancelScope(shield=True):
            await call.store(499, None, hops, error="client disconnected")
        return None
    uncancel()
    error = GatewayError(
        f"The request was not answered: {SHUTDOWN}.",
        status=503,
        type="server_error",
        code="server_shutting_down",
        headers={"retry-after": "1", "connection": "close"},
    )
    return await failed(call, error, hops)


async def serve_json(call: Call) -> Reply:
    """Answer a non-streaming call; raises GatewayError (already stored) when the chain fails."""
    hops: list[Hop] = []

    async def attempt(provider: Provider, deployment: Deployment) -> tuple[dict[str, Any], ProviderRequest]:
        check_serves_endpoint(provider, call, deployment)
        request = call.provider_request(deployment, provider)
        return await provider.complete(request), request

    drain = call.gateway.drain
    drain.add(call)
    try:
        deployment, (body, request), _ = await run_chain(
            call.route, call.providers, call.health, call.deadline, attempt, hops
        )
    except ChainExhausted as exhausted:
        raise await failed(call, exhausted.error, exhausted.hops) from None
    except asyncio.CancelledError:
        # ``hops`` holds the deployments that failed before the client left (or the shutdown cut the call).
        cut = await cancelled(call, hops)
        if cut is None:
            raise
        raise cut from None
    finally:
        drain.discard(call)
    if request.endpoint != call.endpoint:  # the client's own protocol: its edge handler fixes what it must
        await call.store(200, deployment, hops, usage=native_counts(body.get("usage")))
        return Reply(body, Outcome(deployment, hops, notes=request.notes, native=True))
    body["model"] = deployment.ref
    if call.hooks is not None:
        body = await call.hooks.response(call, deployment, hops, body)
    if (usage := body.get("usage")) is not None:  # the client is sent the counts that are stored
        body["usage"] = checked_usage(usage)[0]
    await call.store(200, deployment, hops, usage=usage)
    return Reply(body, Outcome(deployment, hops, notes=request.notes))

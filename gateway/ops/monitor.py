"""What ``GET /metrics`` reports: counters and histograms updated on the request path, gauges read when scraped
(cooldowns, calls in flight, shutdown state, local models and their queues).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from minigate.gateway.ops.metrics import LATENCY_BUCKETS, TTFT_BUCKETS, Counter, Gauge, Histogram, render
from minigate.gateway.routing.chain import cause_of
from minigate.providers.base import ManagesModels, ProviderError

if TYPE_CHECKING:
    from minigate.gateway.core.tokens import TokenCounts
    from minigate.gateway.ops.drain import Drain
    from minigate.gateway.routing.cooldowns import HealthBook
    from minigate.gateway.routing.routes import Deployment
    from minigate.gateway.storage import UsageWriter
    from minigate.providers.base import Provider

__all__ = ["GatewayMetrics"]

log = logging.getLogger("minigate")


class GatewayMetrics:
    """The gateway's metrics; one instance per app."""

    def __init__(self) -> None:
        self.requests = Counter(
            "minigate_requests_total",
            "Requests to /v1 by endpoint, status (as stored in the usage row) and the provider that answered.",
            ("endpoint", "status", "provider"),
        )
        self.latency = Histogram(
            "minigate_request_duration_seconds",
            "Time from a /v1 request's arrival to the end of its answer (streams: the last byte).",
            ("endpoint", "provider"),
            LATENCY_BUCKETS,
        )
        self.ttft = Histogram(
            "minigate_time_to_first_token_seconds",
            "Time from a streamed request's arrival to its first content chunk.",
            ("provider", "model"),
            TTFT_BUCKETS,
        )
        self.tokens = Counter(
            "minigate_tokens_total",
            "Tokens reported by upstreams, by kind (prompt/completion).",
            ("provider", "model", "kind"),
        )
        self.fallbacks = Counter(
            "minigate_fallbacks_total",
            "Deployments that failed or were skipped before another was tried, by cause.",
            ("provider", "error_class", "code"),
        )
        self.reloads = Counter("minigate_config_reloads_total", "Configuration reloads by result.", ("result",))
        self.rejected = Counter(
            "minigate_usage_counts_rejected_total",
            "Token counts an upstream reported that were not valid (stored and counted as missing), by field.",
            ("provider", "field"),
        )
        self._warned: set[tuple[str, str]] = set()  # deployments whose invalid counts were logged already

    def request(self, endpoint: str, status: int, provider: str | None, seconds: float) -> None:
        """Count one finished /v1 request."""
        provider = provider or "none"
        self.requests.inc((endpoint, str(status), provider))
        self.latency.observe((endpoint, provider), seconds)

    def call(
        self,
        deployment: Deployment | None,
        listed: bool,
        hops: list[Any],
        usage: TokenCounts,
        ttft_ms: float | None,
    ) -> None:
        """Count what one stored usage row says: tokens (checked by ``minigate.gateway.core.tokens``, so the counter
        only grows), time to first token, fallback causes."""
        for hop in hops:
            self.fallbacks.inc((hop.deployment.provider, *cause_of(hop.error)))
        if deployment is None:
            return
        labels = (deployment.provider, deployment.model if listed else "other")
        prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
        if prompt:
            self.tokens.inc((*labels, "prompt"), prompt)
        if completion:
            self.tokens.inc((*labels, "completion"), completion)
        if ttft_ms is not None:
            self.ttft.observe(labels, ttft_ms / 1000)

    def rejected_counts(self, deployment: Deployment, listed: bool, problems: dict[str, str]) -> None:
        """Count the invalid token counts of one answer (``problems`` from
        ``minigate.gateway.core.tokens.token_counts``); the first answer with any, per deployment, is logged (event
        ``usage_counts_invalid``): a broken upstream sends them with every answer, and one line says as much as a
        thousand."""
        for name in problems:
            self.rejected.inc((deployment.provider, name))
        key = (deployment.provider, deployment.model if listed else "other")  # bounded: clients choose models
        if key in self._warned:
            return
        self._warned.add(key)
        shown = ", ".join(f"{name}={value}" for name, value in problems.items())
        log.warning(
            "%s/%s reported token counts that are not valid; they are stored and counted as missing (%s); "
            "logged once per deployment, counted in minigate_usage_counts_rejected_total",
            *key,
            shown,
            extra={"event": "usage_counts_invalid", "provider": key[0], "model": key[1], "problems": problems},
        )

    async def scrape(
        self, providers: Mapping[str, Provider], health: HealthBook, drain: Drain, usage: UsageWriter
    ) -> bytes:
        """The exposition text, with the gauges read now from the gateway's providers, cooldowns, drain and
        usage writer."""
        cooling: dict[str, int] = dict.fromkeys(providers, 0)
        for ref, state in health.snapshot().items():
            provider = ref.partition("/")[0]
            if provider in cooling and float(str(state["cooldown_s"])) > 0:
                cooling[provider] += 1
        gauges = [
            Gauge(
                "minigate_deployments_cooling", "Deployments skipped while they cool down, by provider.", ("provider",)
            ).set_all(((p,), n) for p, n in cooling.items()),
            Gauge("minigate_in_flight_requests", "Calls waiting on or streaming from an upstream.").set_all(
                [((), len(drain.calls))]
            ),
            Gauge("minigate_shutting_down", "1 once SIGTERM was received.").set_all([((), float(drain.stopping))]),
            Gauge("minigate_usage_rows_held", "Usage rows kept in memory because the database refuses them.").set_all(
                [((), float(usage.held))]
            ),
            Gauge(
                "minigate_usage_rows_lost", "Usage rows given up on since start (each logged as usage_row_lost)."
            ).set_all([((), float(usage.lost))]),
            *await _local_gauges(providers),
        ]
        return render(
            [self.requests, self.latency, self.ttft, self.tokens, self.fallbacks, self.reloads, self.rejected, *gauges]
        )


# A local model's prefix cache, from its worker's stats: (metric, help, stats key); counters end in _total.
_PREFIX_SERIES = (
    ("minigate_local_prefix_lookups_total", "Requests that looked for a cached prefix.", "prefix_lookups"),
    ("minigate_local_prefix_hits_total", "Requests that reused a cached prefix.", "prefix_hits"),
    ("minigate_local_prefix_reused_tokens_total", "Prompt tokens taken from the prefix cache.", "prefix_reused_tokens"),
    ("minigate_local_prefilled_tokens_total", "Prompt tokens prefilled for requests.", "prefilled_tokens"),
    (
        "minigate_local_prefix_settled_tokens_total",
        "Generated tokens prefilled again while idle, for a next turn.",
        "prefix_settled_tokens",
    ),
    ("minigate_local_prefix_evictions_total", "Cached sequences dropped for the budget.", "prefix_evictions"),
    ("minigate_local_prefix_cache_bytes", "KV cache bytes the prefix cache holds.", "prefix_bytes"),
    ("minigate_local_prefix_cache_budget_bytes", "The prefix cache's budget in bytes.", "prefix_budget_bytes"),
)


async def _worker_stats(client: Any) -> dict[str, Any]:
    """One local model's worker stats, asked briefly (``active``, ``queued``, the prefix cache's counters...); when
    it does not answer in time, its in-flight count and the prefix cache counters it last sent."""
    inflight = float(len(getattr(client, "inflight", ())))
    fallback = {"active": inflight, "queued": 0, **(getattr(client, "cache_stats", None) or {})}
    ask = getattr(client, "worker_stats", None)
    if ask is None:
        return fallback
    try:
        stats: dict[str, Any] = await ask(wait=0.5)
        return stats
    except (ProviderError, TimeoutError):
        return fallback


async def _local_gauges(providers: Mapping[str, Provider]) -> list[Gauge | Counter]:
    loaded = Gauge("minigate_local_models_loaded", "Models with a running worker, per local provider.", ("provider",))
    active = Gauge(
        "minigate_local_active_requests", "Sequences a local model is generating now.", ("provider", "model")
    )
    queued = Gauge("minigate_local_queue_depth", "Requests waiting for a local model's batch.", ("provider", "model"))
    counts: list[tuple[Any, ...]] = []
    jobs: list[Any] = []
    for name, provider in providers.items():
        if not isinstance(provider, ManagesModels):
            continue
        # The onnx provider's loaded() gives each model's worker client, which can say its queue depth.
        running = getattr(provider, "loaded", None)
        clients: dict[str, Any] = (
            dict(running()) if callable(running) else {i.id: None for i in provider.info() if i.state == "loaded"}
        )
        counts.append(((name,), float(len(clients))))
        for model, client in clients.items():
            jobs.append(((name, model), client))
    results = await asyncio.gather(*(_worker_stats(c) for _, c in jobs))
    active.set_all((labels, float(r.get("active", 0))) for (labels, _), r in zip(jobs, results, strict=True))
    queued.set_all((labels, float(r.get("queued", 0))) for (labels, _), r in zip(jobs, results, strict=True))
    loaded.set_all(counts)
    prefix: list[Gauge | Counter] = []
    for metric, help, key in _PREFIX_SERIES:
        # Counters of the worker's life: a new worker (reload, crash) starts again at zero, as a restart would.
        series = Counter(metric, help, ("provider", "model")) if metric.endswith("_total") else None
        gauge = series or Gauge(metric, help, ("provider", "model"))
        gauge.values = {labels: float(r[key]) for (labels, _), r in zip(jobs, results, strict=True) if key in r}
        prefix.append(gauge)
    return [loaded, active, queued, *prefix]

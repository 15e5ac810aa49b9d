#!/usr/bin/env python
"""What counting a refused request costs: CPU per 401 through the request wrapper (``observe``), without refusal
counting beside with it, in alternating rounds of one run.

Run from the repository root with the project's venv active (a few seconds)::

    python bench/bench_refused.py [--requests 20000] [--rounds 5]

The wrapped app answers every request 401 ``invalid_api_key`` at once, so the wrapper's own work is what is timed:
request id, metrics, the access log line (its logger off, as in production at WARNING) and, in the second column,
:meth:`Refusals.note`. "distinct" sends each request from another client address, so every minute's map fills to
its cap and the rest goes to the overflow row (the worst case). /proc/loadavg is printed: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from minigate.gateway.core.errors import ERROR_CODE
from minigate.gateway.ops.drain import Drain
from minigate.gateway.ops.monitor import GatewayMetrics
from minigate.gateway.ops.observe import observe
from minigate.gateway.ops.refusals import Refusals

_BODY = (
    b'{"error":{"message":"Invalid or missing API key.","type":"invalid_request_error","param":null,'
    b'"code":"invalid_api_key"}}'
)


async def _refuse(scope: Any, receive: Any, send: Any) -> None:
    scope["state"][ERROR_CODE] = "invalid_api_key"
    await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": _BODY, "more_body": False})


async def _run(refusals: Refusals | None, requests: int, distinct: bool) -> float:
    """CPU microseconds per request."""
    app = observe(_refuse, GatewayMetrics(), Drain(), None, refusals)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    started = time.process_time()
    for n in range(requests):
        client = (f"10.0.{n // 256 % 256}.{n % 256}" if distinct else "10.0.0.1", 50000)
        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "client": client}
        await app(scope, receive, send)
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("minigate.access").setLevel(logging.WARNING)
    print(f"loadavg before: {Path('/proc/loadavg').read_text().strip()}")
    results: dict[str, list[float]] = {"none": [], "same": [], "distinct": []}
    for _ in range(args.rounds):
        results["none"].append(asyncio.run(_run(None, args.requests, False)))
        results["same"].append(asyncio.run(_run(Refusals(), args.requests, False)))
        results["distinct"].append(asyncio.run(_run(Refusals(), args.requests, True)))
    print(f"{args.rounds} rounds of {args.requests} refused requests; CPU us per request (median of the rounds):")
    base = sorted(results["none"])[args.rounds // 2]
    for name, label in (("none", "no refusal counting"), ("same", "counted, one client"),
                        ("distinct", "counted, a new client each (cap, overflow)")):  # fmt: skip
        median = sorted(results[name])[args.rounds // 2]
        print(f"  {label:<44} {median:7.2f} us  (+{median - base:5.2f} us)")
    print(f"loadavg after:  {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()

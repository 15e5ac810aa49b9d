"""Synthetic usage rows written straight into a migrated database (tests and the usage-page benchmark)."""

from __future__ import annotations

import random
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

AGENTS = [("defaults", "echo", "echo"), ("slow", "slow", "echo"), ("remote", "remote", "gpt-4o-mini")]


def fill_usage(db_path: Path, count: int, *, hours: float = 24.0, seed: int = 4) -> None:
    """Insert ``count`` rows spread over the last ``hours``: some errors, some fallbacks, four keys."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for _ in range(count):
        agent, provider, model = rng.choice(AGENTS)
        failed = rng.random() < 0.05
        fallbacks = 1 if rng.random() < 0.03 else 0
        prompt, completion = rng.randint(5, 400), rng.randint(1, 600)
        created = now - timedelta(seconds=rng.uniform(0, hours * 3600))
        rows.append(
            (
                uuid.uuid4().hex,
                created.strftime("%Y-%m-%d %H:%M:%S.%f"),
                rng.choice([None, 1, 2, 3]),
                "chat/completions",
                agent if agent != "defaults" else "default",
                agent,
                None if failed else provider,
                None if failed else model,
                fallbacks,
                '[{"provider": "remote", "model": "gpt-4o-mini", "error": "x", "status": 503}]' if fallbacks else None,
                502 if failed else 200,
                "all deployments failed" if failed else None,
                None if failed else prompt,
                None if failed else completion,
                None if failed else prompt + completion,
                rng.lognormvariate(6, 0.8),
                rng.lognormvariate(4, 0.5),
                rng.random() < 0.7,
                None if failed else (prompt * 0.15 + completion * 0.6) / 1e6,  # gpt-4o-mini's list price
            )
        )
    rows.sort(key=lambda row: str(row[1]))  # the gateway appends rows in time order
    with sqlite3.connect(db_path) as db:
        db.executemany(
            "INSERT INTO usage (request_id, created_at, key_id, endpoint, requested_model, agent, provider, model,"
            " fallbacks, hops, status, error, prompt_tokens, completion_tokens, total_tokens, latency_ms, ttft_ms,"
            " streamed, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

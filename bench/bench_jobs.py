"""What keeping admin jobs and login failures in the database costs (SQLite file in a temporary folder).

Jobs: a job that notes ``--lines`` progress lines as fast as the event loop lets it (one ``sleep(0)`` each, the
worst case; a real pull notes a few lines a second), run bare (lines into a deque, as jobs were kept before) and
through a :class:`JobBoard` on the database, interleaved per round; the board's writes are counted (coalesced to
at most one every 0.5 s). Target: the job's CPU time (the process's, the database thread's included) within 10%
of the bare run's, median over the rounds; wall times are printed too, but swing with the shared machine's load.

Logins: the cost of one failed attempt (check + count) and of one check, median over ``--logins`` attempts.

    python bench/bench_jobs.py [--rounds 3] [--lines 200000] [--logins 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from minigate.gateway.runtime.jobs import JobBoard
from minigate.gateway.storage import Database, Job, JobStore, LoginThrottle, open_database


class CountingStore(JobStore):
    """A job store that counts its writes."""

    writes = 0

    async def save(self, job: Job) -> None:
        """Count, then write."""
        self.writes += 1
        await super().save(job)


async def noisy(lines: int, progress: Callable[[str], None]) -> None:
    for i in range(lines):
        progress(f"step {i} of {lines}")
        await asyncio.sleep(0)


async def bare(lines: int) -> tuple[float, float]:
    kept: deque[str] = deque(maxlen=40)
    started, cpu = time.perf_counter(), time.process_time()
    await noisy(lines, kept.append)
    return time.perf_counter() - started, time.process_time() - cpu


async def on_board(db: Database, lines: int) -> tuple[float, float, int]:
    store = CountingStore(db)
    board = JobBoard(store)
    ended = asyncio.Event()
    started, cpu = time.perf_counter(), time.process_time()
    took: list[float] = []

    async def work(progress: Callable[[str], None]) -> None:
        await noisy(lines, progress)
        took.extend([time.perf_counter() - started, time.process_time() - cpu])
        ended.set()

    job = await board.start("pull", "bench/model", work)
    await ended.wait()
    for _ in range(1000):  # the last write, within 10 s
        if (stored := await store.get(job.id)) is None or stored.state != "running":
            break
        await asyncio.sleep(0.01)
    await board.close()
    return took[0], took[1], store.writes


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--logins", type=int, default=300)
    args = parser.parse_args()
    print("load average:", load())
    with tempfile.TemporaryDirectory() as folder:
        db = await open_database(f"sqlite+aiosqlite:///{folder}/bench.db")
        try:
            ratios = []
            for round_ in range(args.rounds):
                base, base_cpu = await bare(args.lines)
                board, board_cpu, writes = await on_board(db, args.lines)
                ratios.append(board_cpu / base_cpu)
                print(
                    f"round {round_ + 1}: bare {base:.2f} s ({base_cpu:.2f} s CPU), on the board {board:.2f} s "
                    f"({board_cpu:.2f} s CPU, {board_cpu / base_cpu:.2f}x), {writes} writes for {args.lines:,} lines"
                )
            median = statistics.median(ratios)
            verdict = "PASS" if median <= 1.10 else "FAIL"
            print(f"jobs: median CPU {median:.2f}x the bare run's: {verdict} (target 1.10x)")
            throttle = LoginThrottle(db)
            attempts, checks = [], []
            for i in range(args.logins):
                address = f"10.0.{i // 256}.{i % 256}"
                started = time.perf_counter()
                await throttle.blocked([address, "forwarded"])
                checks.append(time.perf_counter() - started)
                await throttle.failed([address, "forwarded"])
                attempts.append(time.perf_counter() - started)
            print(
                f"logins: a failed attempt (check + count, two counters) {statistics.median(attempts) * 1000:.2f} ms, "
                f"a check {statistics.median(checks) * 1000:.2f} ms (medians of {args.logins})"
            )
        finally:
            await db.close()
    print("load average:", load())


if __name__ == "__main__":
    asyncio.run(main())

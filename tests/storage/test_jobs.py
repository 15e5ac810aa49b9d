"""Admin jobs in the database (SQLite and PostgreSQL): a job run by one process is read, with its progress and its
outcome, by another opened on the same database; ids never collide; old jobs are pruned; a job whose process died
or stopped reads as failed."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import minigate
from minigate.gateway.runtime.jobs import JobBoard
from minigate.gateway.storage import Database, JobStore
from minigate.gateway.storage.jobs import INTERRUPTED, STOPPED, Job
from minigate.providers.base import ProviderError
from tests.storage.conftest import Backend, Clock

_REPO = str(Path(minigate.__file__).resolve().parent.parent)


async def until(read: Callable[[], Awaitable[Job | None]], done: Callable[[Job], bool], within: float = 10.0) -> Job:
    """Await ``read()`` until it gives a job for which ``done`` holds (for at most ``within`` seconds)."""
    deadline = time.monotonic() + within
    while True:
        job = await read()
        if job is not None and done(job):
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def test_a_job_of_one_process_is_read_with_progress_and_outcome_by_another(db: Database, other: Database) -> None:
    runner, reader = JobBoard(JobStore(db), every=0.05), JobBoard(JobStore(other))
    release = asyncio.Event()
    refreshed: list[bool] = []

    async def work(progress: Callable[[str], None]) -> None:
        progress("downloading 10%")
        await release.wait()
        for i in range(100):  # more than the 40 kept
            progress(f"step {i}")

    job = await runner.start("pull", "local/tiny", work, lambda: refreshed.append(True))
    seen = await until(lambda: reader.get(job.id), lambda j: bool(j.lines))
    assert (seen.kind, seen.target, seen.state, list(seen.lines)) == (
        "pull",
        "local/tiny",
        "running",
        ["downloading 10%"],
    )
    release.set()
    done = await until(lambda: reader.get(job.id), lambda j: j.state != "running")
    assert done.view() == {
        "id": job.id,
        "kind": "pull",
        "target": "local/tiny",
        "state": "done",
        "started": pytest.approx(job.started),
        "finished": pytest.approx(job.finished),
        "error": None,
        "status": None,
        "progress": [f"step {i}" for i in range(60, 100)],
    }
    assert refreshed == [True]
    assert [j.id for j in await reader.all()] == [job.id]
    await runner.close()


async def test_failures_are_stored_with_their_status(db: Database, other: Database) -> None:
    runner, reader = JobBoard(JobStore(db)), JobStore(other)

    async def refused(progress: Callable[[str], None]) -> None:
        progress("error: not a model folder")
        raise ProviderError("not a model folder", status=400, code="invalid_model", fallback=False)

    async def broken(progress: Callable[[str], None]) -> None:
        raise RuntimeError("disk full")

    first = await runner.start("import", "local/x", refused)
    second = await runner.start("import", "local/y", broken)
    one = await until(lambda: reader.get(first.id), lambda j: j.state != "running")
    two = await until(lambda: reader.get(second.id), lambda j: j.state != "running")
    assert one is not None and (one.state, one.error, one.status) == ("failed", "not a model folder", 400)
    assert list(one.lines) == ["error: not a model folder"]
    assert two is not None and (two.state, two.error, two.status) == ("failed", "RuntimeError: disk full", 500)
    for missing in (second.id + 1000, 0, -1, 2**63, 28614471006986559488):  # the last ones fit no BIGINT
        assert await reader.get(missing) is None


async def test_ids_are_unique_across_processes(db: Database, other: Database) -> None:
    stores = [JobStore(db), JobStore(other)]
    jobs = await asyncio.gather(*(stores[i % 2].create("pull", f"p/{i}") for i in range(20)))
    assert len({job.id for job in jobs}) == 20
    assert sorted(j.target for j in await stores[0].recent()) == sorted(f"p/{i}" for i in range(20))


async def test_a_stopped_gateway_marks_its_running_jobs_interrupted(db: Database, other: Database) -> None:
    runner = JobBoard(JobStore(db))
    begun = await runner.start("pull", "local/big", lambda progress: asyncio.Event().wait())
    await asyncio.sleep(0.1)
    queued = await runner.start("pull", "local/bigger", lambda progress: asyncio.Event().wait())
    await runner.close()  # the gateway shuts down while one pull runs and the other has not begun
    for job in (begun, queued):
        stored = await JobStore(other).get(job.id)
        assert stored is not None and (stored.state, stored.error, stored.status) == ("failed", STOPPED, 503)


async def test_a_running_job_without_a_heartbeat_reads_as_failed(db: Database, other: Database) -> None:
    clock = Clock(1_000_000.0)
    job = await JobStore(db, clock=clock).create("pull", "local/big")
    reader = JobStore(other, stale_after=30.0, clock=clock)
    clock.now += 29
    fresh = await reader.get(job.id)
    assert fresh is not None and fresh.state == "running"
    clock.now += 2
    stale = await reader.get(job.id)
    assert stale is not None and (stale.state, stale.error, stale.status) == ("failed", INTERRUPTED, 500)
    assert stale.finished == 1_000_000.0  # its last sign of life
    assert [j.state for j in await reader.recent()] == ["failed"]


async def test_old_jobs_are_pruned_but_not_live_ones(db: Database) -> None:
    clock = Clock(1_000_000.0)
    store = JobStore(db, keep=3, max_age=3600.0, stale_after=1000.0, clock=clock)
    live = await store.create("pull", "live")  # running, and its process writes a heartbeat
    finished = []
    for i in range(4):
        job = await store.create("import", f"old/{i}")
        job.state, job.finished = "done", clock.now
        await store.save(job)
        finished.append(job.id)
    await store.save(live)
    assert [j.target for j in await store.recent()] == ["old/3", "old/2", "old/1"]
    assert await store.get(live.id) is not None  # beyond the newest three, but still running
    assert await store.get(finished[0]) is None
    clock.now += 3000
    await store.save(live)
    clock.now += 700  # the finished ones are now older than an hour
    await store.create("pull", "new")
    assert sorted(j.target for j in await store.recent()) == ["live", "new"]


_CHILD = """
import asyncio, sys
from minigate.gateway.runtime.jobs import JobBoard
from minigate.gateway.storage import JobStore, open_database

async def main():
    db = await open_database(sys.argv[1])
    board = JobBoard(JobStore(db), every=0.05, beat=0.2)
    job = await board.start("pull", "local/forever", lambda progress: (progress("started"), asyncio.Event().wait())[1])
    print(job.id, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_job_whose_process_was_killed_reads_as_failed(backend: Backend, db: Database) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_REPO, os.environ.get("PYTHONPATH", "")])}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, backend.url, env=env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        job_id = int(await asyncio.wait_for(child.stdout.readline(), 30))
        reader = JobStore(db, stale_after=1.0)
        await asyncio.sleep(1.5)  # longer than stale_after: only the child's heartbeats keep it running
        alive = await reader.get(job_id)
        assert alive is not None and alive.state == "running" and list(alive.lines) == ["started"]
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
        dead = await until(lambda: reader.get(job_id), lambda j: j.state != "running")
        assert (dead.state, dead.error) == ("failed", INTERRUPTED)
    finally:
        if child.returncode is None:
            child.kill()
            await asyncio.wait_for(child.wait(), 10)

"""The relay's deadline (gateway/serving/streaming.py ``_Deadline``): which cancellations end a stream as a 504.

A flaky 499 in tests/test_hostile_clients.py came from Python 3.11's ``asyncio.timeout``: a bounded write to the client
that ended just as its timeout fired left a cancellation pending that nobody requested any more, and the relay took it
for the client's disconnect.
"""

from __future__ import annotations

import asyncio
import time

from minigate.gateway.serving.streaming import _Deadline


async def _cancelled_in(deadline: _Deadline) -> bool:
    """Wait once; True if a cancellation arrived (the caller sets up what is pending)."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        return True
    return False


def test_a_stale_cancellation_after_the_deadline_is_the_deadlines() -> None:
    async def run() -> bool:
        deadline = _Deadline(time.monotonic())  # expires at once, while the relay is not waiting
        await asyncio.sleep(0.01)
        assert deadline.expired and not deadline.cancelled
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        task.uncancel()  # what asyncio.timeout does when its write ends as it fires: taken back, still pending
        if not await _cancelled_in(deadline):
            return True  # a Python that clears the pending cancellation: nothing to tell apart
        took = deadline.took()
        deadline.close()
        return took

    assert asyncio.run(run()) is True


def test_a_requested_cancellation_is_not_the_deadlines() -> None:
    async def run() -> tuple[bool, bool]:
        deadline = _Deadline(time.monotonic())
        await asyncio.sleep(0.01)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # a client's disconnect: requested, and still so when it lands
        assert await _cancelled_in(deadline)
        took = deadline.took()
        task.uncancel()
        early = _Deadline(time.monotonic() + 60)  # before the deadline nothing is the deadline's
        task.cancel()
        assert await _cancelled_in(early)
        task.uncancel()
        early.close()
        deadline.close()
        return took, early.took()

    assert asyncio.run(run()) == (False, False)


def test_the_deadline_cancels_a_relay_waiting_on_the_upstream() -> None:
    async def run() -> bool:
        deadline = _Deadline(time.monotonic() + 0.02)
        deadline.waiting = True
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return deadline.took()
        finally:
            deadline.close()
        return False

    assert asyncio.run(run()) is True

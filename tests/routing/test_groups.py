"""Model groups through the gateway in process, over two fake upstreams: each strategy balances as it says, a dead
member cools down while the other serves, and the answer's headers and usage row name the member that answered."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from minigate.gateway.routing.groups import LoadBook
from minigate.gateway.runtime.gateway import Gateway
from tests.fakes.upstream import Delay, FakeUpstream, ResetAfter, StallAfter, Status
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway

AUTH = {"authorization": f"Bearer {ADMIN_KEY}"}
BODY = {"model": "qwen", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def boxes() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    """Two boxes serving the same model."""
    with FakeUpstream("box-a") as a, FakeUpstream("box-b") as b:
        yield a, b


def group_config(a: FakeUpstream, b: FakeUpstream, group: dict[str, Any], **cooldown: float) -> dict[str, Any]:
    """Agent ``qwen``: ``group`` over ``boxA/qwen`` and ``boxB/qwen``, then ``boxB/other`` as the chain's fallback."""
    return {
        "agents": {"qwen": {"model": {"primary": group, "fallbacks": ["boxB/other"]}}},
        "models": {
            "providers": {
                "boxA": {"endpoint": a.url, "models": ["qwen"], "timeout": 5},
                "boxB": {"endpoint": b.url, "models": ["qwen", "other"], "timeout": 5},
            }
        },
        "router": {"timeout": 10, "cooldown": {"failures": 1, "initial": 0.5, **cooldown}},
    }


def running(app: InProcessGateway) -> Gateway:
    """The app's running gateway."""
    gateway: Gateway = app.http.app.state.gateway  # type: ignore[attr-defined]
    return gateway


def who(response: Any) -> str:
    """``provider/model`` of the member that answered, as the headers say."""
    assert response.status_code == 200, response.text
    return f"{response.headers['x-minigate-provider']}/{response.headers['x-minigate-model']}"


def ask(app: InProcessGateway, **extra: Any) -> Any:
    return app.http.post("/v1/chat/completions", json={**BODY, **extra}, headers=AUTH)


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_least_busy_sends_the_next_requests_to_the_idle_member(
    inprocess_factory: Callable[..., InProcessGateway], boxes: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = boxes
    app = inprocess_factory(group_config(a, b, {"group": ["boxA/qwen", "boxB/qwen"], "strategy": "least_busy"}))
    load = running(app).health.load
    for box in boxes:  # whichever member takes the first request holds it as a slow stream
        box.script(StallAfter(1, 1.5))
    slow: list[Any] = []
    holder = threading.Thread(target=lambda: slow.append(ask(app, stream=True)))
    holder.start()
    wait_for(lambda: sum(load.busy.values()) == 1)
    (busy,) = load.busy
    idle = b if busy == "boxA/qwen" else a
    idle.reset()  # its scripted stall was not used: the idle box answers at once
    answered = [who(ask(app)) for _ in range(6)]
    assert answered == [f"{'boxB' if idle is b else 'boxA'}/qwen"] * 6
    assert load.busy == {busy: 1}  # the slow stream still holds its member
    holder.join(10)
    assert who(slow[0]) == busy and slow[0].text.count("data: ") > 1
    assert load.busy == {}  # every request ended: nothing left outstanding
    rows = app.wait_rows(7)
    assert Counter(f"{r['provider']}/{r['model']}" for r in rows) == Counter({busy: 1, answered[0]: 6})


def test_weighted_shares_requests_by_weight(
    inprocess_factory: Callable[..., InProcessGateway], boxes: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = boxes
    group = {"group": [{"ref": "boxA/qwen", "weight": 3}, "boxB/qwen"]}  # strategy weighted, implied by the weight
    app = inprocess_factory(group_config(a, b, group))
    running(app).health.load.rng = random.Random(18)
    counts = Counter(who(ask(app)) for _ in range(120))
    # 3:1 over 120 requests: 90 expected for boxA (binomial sd 4.7); the bounds are over 5 sd away
    assert 66 <= counts["boxA/qwen"] <= 110 and counts["boxA/qwen"] + counts["boxB/qwen"] == 120


def test_latency_prefers_the_faster_member(
    inprocess_factory: Callable[..., InProcessGateway], boxes: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = boxes
    a.set_default(Delay(0.15))
    app = inprocess_factory(group_config(a, b, {"group": ["boxA/qwen", "boxB/qwen"], "strategy": "latency"}))
    load = running(app).health.load
    load.rng = random.Random(5)
    answered = [who(ask(app)) for _ in range(14)]
    assert set(answered[:2]) == {"boxA/qwen", "boxB/qwen"}  # each is measured first
    assert answered[2:].count("boxB/qwen") >= 10, answered  # then the fast one, but for a little exploration
    slow, fast = load.latency("boxA/qwen", False), load.latency("boxB/qwen", False)
    assert slow is not None and fast is not None and slow > fast + 0.1
    # streams are measured apart, by their first token
    answered = [who(ask(app, stream=True)) for _ in range(6)]
    assert answered[2:].count("boxB/qwen") >= 3 and load.latency("boxB/qwen", True) is not None


def test_a_dead_member_cools_down_while_the_other_serves_and_comes_back(
    inprocess_factory: Callable[..., InProcessGateway], boxes: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = boxes
    a.set_default(Status(503))
    app = inprocess_factory(group_config(a, b, {"group": ["boxA/qwen", "boxB/qwen"]}, initial=0.6))
    gateway = running(app)
    gateway.health.load.rng = random.Random(3)
    first = ask(app)
    while len(a.requests) == 0:  # until boxA was tried (the draw may pick boxB first)
        assert who(first) == "boxB/qwen"
        first = ask(app)
    # boxA failed and cooled down; the group's other member answered before the chain's fallback (boxB/other)
    assert who(first) == "boxB/qwen" and first.headers["x-minigate-fallbacks"] == "1"
    row = app.wait_rows(len(b.requests))[-1]
    assert (row["provider"], row["model"], row["fallbacks"]) == ("boxB", "qwen", 1)
    assert "boxA" in row["hops"] and "503" in row["hops"]
    assert gateway.health.cooling("boxA/qwen") > 0
    tried = len(a.requests)
    during = [ask(app) for _ in range(5)]
    assert [who(r) for r in during] == ["boxB/qwen"] * 5
    assert all(r.headers["x-minigate-fallbacks"] == "0" for r in during)  # a cooling member is skipped, not a hop
    assert len(a.requests) == tried
    a.set_default(Delay(0))  # boxA is back; once its cooldown ends it serves again
    wait_for(lambda: gateway.health.cooling("boxA/qwen") == 0)
    after = [who(ask(app)) for _ in range(12)]
    assert "boxA/qwen" in after and gateway.health.load.busy == {}


def test_a_member_failing_a_stream_hands_it_to_the_other_and_counts_end(
    inprocess_factory: Callable[..., InProcessGateway], boxes: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = boxes
    app = inprocess_factory(group_config(a, b, {"group": ["boxA/qwen", "boxB/qwen"], "strategy": "weighted"}))
    load = running(app).health.load
    a.set_default(ResetAfter(0))  # boxA breaks before its first chunk: the stream falls back to boxB
    for _ in range(4):
        response = ask(app, stream=True)
        assert who(response) == "boxB/qwen" and "data: [DONE]" in response.text
    a.set_default(Delay(0))
    b.set_default(ResetAfter(2))  # boxB now breaks mid-stream, after content was sent: no fallback then
    cut = [ask(app, stream=True) for _ in range(6)]
    assert any(r.headers["x-minigate-provider"] == "boxB" for r in cut)
    assert load.busy == {}  # streams that ended every way left nothing outstanding


def test_a_whole_group_cooling_falls_back_to_the_next_entry(
    inprocess_factory: Callable[..., InProcessGateway], boxes: tuple[FakeUpstream, FakeUpstream]
) -> None:
    a, b = boxes
    a.set_default(Status(503))
    b.script(Status(503), model="qwen")
    app = inprocess_factory(group_config(a, b, {"group": ["boxA/qwen", "boxB/qwen"]}))
    response = ask(app)
    assert who(response) == "boxB/other" and response.headers["x-minigate-fallbacks"] == "2"
    response = ask(app)  # both members cool down: skipped, named as hops, the fallback answers
    assert who(response) == "boxB/other" and response.headers["x-minigate-fallbacks"] == "2"
    assert "cooling" in response.headers["x-minigate-fallback-reasons"]


def test_counts_and_latency_are_kept_per_deployment() -> None:
    load = LoadBook()
    load.sent("a/m")
    load.sent("a/m")
    load.done("a/m")
    assert load.busy == {"a/m": 1}
    load.done("a/m")
    load.done("a/m")  # never below zero
    assert load.busy == {}
    load.answered("a/m", 1.0, False)
    load.answered("a/m", 2.0, False)
    assert load.latency("a/m", False) == pytest.approx(1.3) and load.latency("a/m", True) is None

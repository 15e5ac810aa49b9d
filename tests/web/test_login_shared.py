"""Login throttling over two gateways in process on one SQLite database, as two workers or replicas: failures
through one count in the other, and a success through either forgets them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.inprocess import InProcessGateway
from tests.web.helpers import PASSWORD, WebClient, web_config


@pytest.fixture
def pair(
    inprocess_factory: Callable[..., InProcessGateway],
    remote: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> tuple[WebClient, WebClient]:
    """A web client of each of two gateways sharing one database."""
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    config = web_config(remote)
    config["server"] = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"}
    return WebClient(inprocess_factory(config)), WebClient(inprocess_factory(config))


def test_the_limit_holds_across_gateways(pair: tuple[WebClient, WebClient]) -> None:
    one, two = pair
    for i in range(10):
        assert (one if i % 2 else two).login("wrong").status_code == 401
    refused = two.login(PASSWORD)  # the right password, the eleventh attempt, through the other gateway
    assert refused.status_code == 401 and "Too many failed attempts; wait ten minutes." in refused.text
    assert "Too many failed attempts" in one.login(PASSWORD).text


def test_a_success_through_one_gateway_resets_the_count_in_the_other(pair: tuple[WebClient, WebClient]) -> None:
    one, two = pair
    for _ in range(9):
        assert one.login("wrong").status_code == 401
    assert two.login(PASSWORD).status_code == 303
    for _ in range(9):
        assert one.login("wrong").status_code == 401
    assert one.login(PASSWORD).status_code == 303  # nine since the success: not throttled

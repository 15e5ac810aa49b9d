"""The models page says whether a remote upstream answers: "reachable", "unreachable" (nothing listens, or it is
cooling down after failures), never a blanket "available" (issue 15, item 7)."""

from __future__ import annotations

import re
from collections.abc import Callable

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import free_port
from tests.inprocess import InProcessGateway
from tests.web.helpers import PASSWORD, WebClient, web_config


def _states(page: str) -> dict[str, str]:
    """provider section name -> the state of its first model."""
    states = {}
    for section in page.split('<section class="card provider"')[1:]:
        name = re.search(r"<h3[^>]*>([^<]+?) <span", section)
        state = re.search(r'<span class="state state-([a-z]+)[^"]*">([^<]+)</span>', section)
        assert name is not None and state is not None
        states[name.group(1)] = state.group(2)
    return states


@pytest.fixture
def down_client(
    inprocess_factory: Callable[..., InProcessGateway], remote: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> WebClient:
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    config = web_config(remote)
    config["models"]["providers"]["down"] = {
        "endpoint": f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
        "models": ["gpt-4o"],
        "timeout": 2,
    }
    config["agents"]["down"] = {"model": {"primary": "down/gpt-4o"}}
    web = WebClient(inprocess_factory(config))
    assert web.login().status_code == 303
    return web


def test_an_upstream_nobody_answers_is_not_called_available(down_client: WebClient) -> None:
    states = _states(down_client.get("/models").text)
    assert states["down"] == "unreachable"
    assert states["remote"] == "reachable"  # the fake upstream listens
    assert states["echo"] == "available"  # in process: always there


def test_a_cooling_upstream_is_unreachable_with_its_error(down_client: WebClient, remote: FakeUpstream) -> None:
    server = down_client.server
    for _ in range(3):
        with pytest.raises(openai.APIStatusError):
            server.client(max_retries=0).chat.completions.create(
                model="down", messages=[{"role": "user", "content": "hi"}]
            )
    page = down_client.get("/models").text
    assert _states(page)["down"] == "unreachable"
    assert "last error" in page.split("down <span")[1].split("</section>")[0]

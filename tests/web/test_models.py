"""The models page: providers and models with state, model actions, chains edited, applied and kept."""

from __future__ import annotations

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.inprocess import InProcessGateway
from tests.web.helpers import PASSWORD, WebClient, web_config


def _chain(client: WebClient, agent: str, *refs: str, htmx: bool = False) -> str:
    response = client.post("/models/chain", {"agent": agent, "op": "save", "chain": list(refs)}, htmx=htmx)
    return response.text if response.status_code != 303 else client.get("/models").text


def test_the_page_lists_providers_models_and_chains(client: WebClient, remote: FakeUpstream) -> None:
    page = client.get("/models").text
    for text in ("echo", "slow", "remote", "gpt-4o-mini", "available", "remote/gpt-4o-mini</code> → <code>echo/echo"):
        assert text in page
    assert remote.url.split("//")[1].split("/")[0] in page  # the endpoint, without credentials


@pytest.mark.parametrize(
    ("refs", "problem"),
    [
        ((), "at least a primary"),
        (("nope/echo",), "unknown provider 'nope'"),
        (("echo/missing",), "does not list model 'missing'"),
        (("echo",), "not a model reference"),
        (("echo/echo", "echo/echo"), "appears twice"),
    ],
)
def test_invalid_chains_are_refused(client: WebClient, refs: tuple[str, ...], problem: str) -> None:
    response = client.post("/models/chain", {"agent": "defaults", "op": "save", "chain": list(refs)})
    assert response.status_code == 422
    assert problem in response.text.replace("&#39;", "'")


def test_unknown_agents_cannot_be_created(client: WebClient) -> None:
    response = client.post("/models/chain", {"agent": "invented", "op": "save", "chain": ["echo/echo"]})
    assert response.status_code == 422 and "no agent" in response.text


def _restart(server: InProcessGateway, remote: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> InProcessGateway:
    server.stop()
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    return InProcessGateway(web_config(remote), server.data_dir).start()


def _answered_by(server: InProcessGateway) -> str:
    answer = server.client().chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}])
    return answer.model


def test_a_chain_applies_at_once_and_survives_a_restart(
    web_app: InProcessGateway, client: WebClient, remote: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    _chain(client, "defaults", "echo/other", "slow/echo")
    assert _answered_by(web_app) == "echo/other"
    listed = {m.id: m for m in web_app.client().models.list().data}
    assert listed["default"].model_extra is not None
    assert listed["default"].model_extra["minigate"]["chain"] == ["echo/other", "slow/echo"]
    again = _restart(web_app, remote, monkeypatch)
    try:
        web = WebClient(again)
        web.login()
        page = web.get("/models").text
        assert "echo/other</code> → <code>slow/echo" in page and "edited" in page
        assert _answered_by(again) == "echo/other"
        web.post("/models/chain", {"agent": "defaults", "op": "reset"})
        assert _answered_by(again) == "echo/echo"
        web.close()
    finally:
        again.stop()


def test_after_a_restart_the_chain_is_in_force_before_any_web_request(
    web_app: InProcessGateway, client: WebClient, remote: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    _chain(client, "defaults", "echo/other")
    again = _restart(web_app, remote, monkeypatch)
    try:
        assert _answered_by(again) == "echo/other"
    finally:
        again.stop()


def test_saving_the_configured_chain_removes_the_override(client: WebClient) -> None:
    _chain(client, "slow", "echo/echo")
    assert "edited" in client.get("/models").text
    page = _chain(client, "slow", "slow/echo")
    assert "edited" not in page


def test_model_actions_report_what_they_can_do(client: WebClient) -> None:
    response = client.post("/models/action", {"provider": "echo", "model": "echo", "action": "load"})
    assert response.status_code == 409 and "no local models to manage" in response.text
    response = client.post("/models/action", {"provider": "echo", "model": "ghost", "action": "unload"})
    assert response.status_code == 409 and "echo/ghost does not exist" in response.text
    response = client.post("/models/import", {"provider": "echo", "kind": "pull", "source": "SmolLM2"})
    assert response.status_code == 409 and "echo cannot pull models" in response.text
    streamed = client.post("/models/import", {"provider": "echo", "kind": "import"}, htmx=True)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert "echo cannot import models" in streamed.text

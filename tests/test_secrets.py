"""Secret canaries: set in the config and the environment, sent by clients in headers and bodies, quoted back by
an upstream; then the log, /metrics, every web page, the database files (every row) and every answer and error body
are searched for them."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from tests.fakes.upstream import FakeUpstream, Reply, Status, StreamError
from tests.gateway_server import ADMIN_KEY
from tests.serve_process import ServeProcess
from tests.web.helpers import WebClient

PROVIDER_KEY = "sk-canary-provider-key-5f1e"
PROVIDER_HEADER = "canary-static-header-77aa"
ADMIN_PASSWORD = "canary-admin-password-31b0"
CLIENT_KEY = "sk-canary-client-bearer-9c2d"
CLIENT_OTHER = "canary-client-x-api-key-4e8f"
BODY_KEY = "sk-canary-body-api-key-0b6a"
WRONG_PASSWORD = "canary-wrong-password-8d3c"
CANARIES = [
    PROVIDER_KEY,
    PROVIDER_HEADER,
    ADMIN_PASSWORD,
    CLIENT_KEY,
    CLIENT_OTHER,
    BODY_KEY,
    WRONG_PASSWORD,
    ADMIN_KEY,
]


def test_no_secret_reaches_logs_metrics_database_or_answers(tmp_path: Path) -> None:
    with FakeUpstream("up") as up, FakeUpstream("backup") as backup:
        config = {
            "agents": {"defaults": {"model": {"primary": "up/m", "fallbacks": ["backup/m"]}}},
            "models": {
                "providers": {
                    "up": {
                        "endpoint": up.url,
                        "auth": {"type": "api_key", "value": "${UP_KEY}"},
                        "headers": {"x-extra": PROVIDER_HEADER},
                    },
                    "backup": {"endpoint": backup.url},
                }
            },
            "server": {"shutdown_grace": 1},
        }
        env = {"UP_KEY": PROVIDER_KEY, "MINIGATE_ADMIN_PASSWORD": ADMIN_PASSWORD}
        gateway = ServeProcess(config, tmp_path, env=env).start()
        answers: list[httpx.Response] = []
        try:
            good = {"authorization": f"Bearer {ADMIN_KEY}"}
            chat = f"{gateway.url}/chat/completions"
            hello = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
            # Upstreams that quote the key they were sent, as some services do in their 401s and errors.
            quoted = {"message": f"Incorrect API key provided: {PROVIDER_KEY} (with {PROVIDER_HEADER})"}
            up.script(Status(401, quoted))
            answers.append(httpx.post(chat, headers=good, json=hello))
            up.script(Status(401, quoted))
            backup.script(Status(500))
            answers.append(httpx.post(chat, headers=good, json=hello))
            up.script(StreamError(2, quoted))
            answers.append(httpx.post(chat, headers=good, json={**hello, "stream": True}))
            up.script(Reply(content=f"fine {PROVIDER_HEADER}"[:4]))
            answers.append(httpx.post(chat, headers=good, json={**hello, "api_key": BODY_KEY, "api_base": "x"}))
            # Clients sending secrets where they do not belong.
            for headers in (
                {"authorization": f"Bearer {CLIENT_KEY}", "x-api-key": CLIENT_OTHER},
                {"authorization": CLIENT_KEY, "api-key": CLIENT_OTHER, "cookie": f"session={CLIENT_KEY}"},
                {"x-api-key": CLIENT_OTHER},
            ):
                answers.append(httpx.post(chat, headers=headers, json=hello))
            answers.append(
                httpx.post(f"{gateway.base}/admin/reload", headers={"authorization": f"Bearer {CLIENT_KEY}"})
            )
            web = WebClient(gateway)  # type: ignore[arg-type]  # it needs only the port
            try:
                answers.append(web.login(WRONG_PASSWORD))
                answers.append(web.login(ADMIN_PASSWORD))
                # Every page of the web UI, after a chat whose upstream quoted our key and fell back.
                up.script(Status(401, quoted))
                conversation = web.new_chat("default", system_prompt="hello")
                web.send(conversation, "hi from the web")
                answers.append(web.post("/keys", {"name": "canary-page-key"}))
                for page in ("/chat", f"/chat/{conversation}", "/models", "/usage", "/usage?by=key",
                             "/usage?by=provider", "/usage.csv", "/keys", "/login", "/no-such-page"):  # fmt: skip
                    answers.append(web.get(page))
                answers.append(web.get("/usage", headers={"hx-request": "true"}))
                pages = [r.status_code for r in answers[-12:]]
                assert pages == [200] * 9 + [303, 404, 200] and "Hello from backup" in answers[-10].text, pages
            finally:
                web.close()
            answers.append(httpx.get(f"{gateway.base}/metrics"))
            answers.append(httpx.get(f"{gateway.base}/ready"))
            answers.append(httpx.get(f"{gateway.url}/models", headers=good))
            answers.append(gateway.admin("GET", "/admin/api/models"))
            answers.append(gateway.admin("POST", "/admin/reload"))
            gateway.signal(signal.SIGTERM)
            assert gateway.wait(20) == 0
        finally:
            gateway.stop()
        # The upstream did get the real credentials: the canaries were live.
        assert up.requests[0].headers["authorization"] == f"Bearer {PROVIDER_KEY}"
        assert up.requests[0].headers["x-extra"] == PROVIDER_HEADER
        assert "api_key" not in (up.requests[-1].body or {})

    statuses = [r.status_code for r in answers]
    assert statuses[:7] == [200, 502, 200, 200, 401, 401, 401], statuses
    assert "[redacted]" in answers[1].text and "[redacted]" in answers[2].text  # the quotes were blanked out
    places = {f"answer {i} ({r.request.url.path})": r.text + str(r.headers) for i, r in enumerate(answers)}
    places["log"] = gateway.log_text()
    for path in gateway.db_path.parent.iterdir():  # minigate.db and any -wal/-shm left
        places[path.name] = path.read_bytes().decode("latin-1")
    assert "[redacted]" in places["minigate.db"]
    assert len(gateway.log_records()) > 10
    leaks = [(canary, where) for canary in CANARIES for where, text in places.items() if canary in text]
    assert leaks == []

"""Refused requests on the usage page and in its CSV: counted as requests by their number, shown apart (a status
filter, a total, a chart line), never as errors, tokens or latency."""

from __future__ import annotations

import csv
import io
import re

from minigate.gateway.runtime.gateway import Gateway
from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient


def _total(page: str, name: str) -> str:
    match = re.search(rf"<dt>{name}</dt><dd[^>]*>([^<]*)</dd>", page)
    assert match is not None, name
    return match.group(1)


def _traffic(app: InProcessGateway, served: int, refused: int) -> None:
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(served):
        answer = app.http.post("/v1/chat/completions", headers={"authorization": f"Bearer {ADMIN_KEY}"}, json=body)
        assert answer.status_code == 200, answer.text
    for n in range(refused):
        assert (
            app.http.post("/v1/chat/completions", headers={"authorization": f"Bearer bad-{n}"}, json=body).status_code
            == 401
        )

    async def flush(gateway: Gateway) -> int:
        return await gateway.refusals.flush(everything=True)

    app.run(flush)


def test_refused_requests_count_apart_and_leave_tokens_and_latency_alone(
    client: WebClient, web_app: InProcessGateway
) -> None:
    _traffic(web_app, served=3, refused=0)
    before = client.get("/usage").text
    _traffic(web_app, served=0, refused=300)
    page = client.get("/usage").text
    assert _total(page, "Requests") == "303"
    assert _total(page, "Refused") == "300"
    assert _total(page, "Errors") == "0"
    for name in ("Tokens", "Latency p50", "Latency p95"):
        assert _total(page, name) == _total(before, name), name
    assert "refused 300 times" in page and "invalid_api_key" in page
    errors_chart = page.split('id="c-errors-t"')[1].split("</svg>")[0]
    assert "refused: total 300," in errors_chart and "errors: total 0," in errors_chart


def test_the_status_filter_and_the_csv_show_refused_rows(client: WebClient, web_app: InProcessGateway) -> None:
    _traffic(web_app, served=2, refused=5)
    only = client.get("/usage", params={"status": "refused"}).text
    assert _total(only, "Requests") == "5" and _total(only, "Refused") == "5"
    assert _total(client.get("/usage", params={"status": "ok"}).text, "Requests") == "2"
    assert _total(client.get("/usage", params={"status": "error"}).text, "Requests") == "0"
    rows = list(csv.DictReader(io.StringIO(client.get("/usage.csv").text)))
    assert sorted(r["outcome"] for r in rows) == ["ok", "ok", "refused"]
    refused = next(r for r in rows if r["outcome"] == "refused")
    assert (refused["status"], refused["refused"], refused["error"], refused["key_id"]) == (
        "401",
        "5",
        "invalid_api_key",
        "",
    )
    assert refused["client"] and refused["latency_ms"] != ""
    filtered = list(csv.DictReader(io.StringIO(client.get("/usage.csv", params={"status": "refused"}).text)))
    assert [r["refused"] for r in filtered] == ["5"]

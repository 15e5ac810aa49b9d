"""A client-stopped answer on the usage page: its own status (not an error), its tokens kept, and left out of the
latency percentiles (issue 15, item 6)."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.inprocess import InProcessGateway
from tests.web.browser import base_url, login
from tests.web.helpers import WebClient

Browser = pytest.importorskip("playwright.sync_api").Browser
SHOTS = Path("/tmp/shots-h15u")


def _insert(db_path: object, rows: list[tuple[str, str, int, float, int | None]]) -> None:
    """(request id, agent, status, latency ms, completion tokens) rows created now."""
    with sqlite3.connect(str(db_path)) as db:
        db.executemany(
            "INSERT INTO usage (request_id, created_at, endpoint, requested_model, agent, provider, model, fallbacks,"
            " status, error, completion_tokens, total_tokens, latency_ms, streamed) VALUES (?, datetime('now'),"
            " 'chat/completions', 'default', ?, 'echo', 'echo', 0, ?, ?, ?, ?, ?, 1)",
            [
                (rid, agent, status, "client disconnected" if status == 499 else None, tokens, tokens, ms)
                for rid, agent, status, ms, tokens in rows
            ],
        )


def _total(page: str, name: str) -> str:
    match = re.search(rf"<dt>{name}</dt><dd[^>]*>([^<]*)</dd>", page)
    assert match is not None, name
    return match.group(1)


def _fill(web_app: InProcessGateway) -> None:
    rows: list[tuple[str, str, int, float, int | None]] = [(f"ok{i}", "defaults", 200, 100.0, 10) for i in range(19)]
    rows.append(("stopped", "defaults", 499, 120_000.0, 1995))  # one stopped two-minute answer
    rows.append(("failed", "defaults", 502, 50.0, None))
    _insert(web_app.db_path, rows)


def test_a_stop_is_not_an_error_and_not_in_the_percentiles(client: WebClient, web_app: InProcessGateway) -> None:
    _fill(web_app)
    page = client.get("/usage").text
    assert _total(page, "Requests") == "21"
    assert _total(page, "Errors") == "1"  # the 502 only
    assert _total(page, "Stopped") == "1"
    assert _total(page, "Tokens") == f"{19 * 10 + 1995:,}"
    p95 = float(_total(page, "Latency p95").split()[0].replace(",", ""))
    assert p95 < 1000  # the stopped two-minute answer does not dominate it
    stopped_row = re.search(
        r"<tr class=\"([^\"]*)\">(?:(?!</tr>).)*client disconnected(?:(?!</tr>).)*</tr>", page, re.S
    )
    assert stopped_row is not None and "err" not in stopped_row.group(1)
    assert ">stopped<" in stopped_row.group(0) and ">499<" not in stopped_row.group(0)
    assert "1,995" in stopped_row.group(0)


def test_the_status_filter_and_the_csv_know_stops(client: WebClient, web_app: InProcessGateway) -> None:
    _fill(web_app)
    assert _total(client.get("/usage", params={"status": "stopped"}).text, "Requests") == "1"
    assert _total(client.get("/usage", params={"status": "error"}).text, "Requests") == "1"
    assert _total(client.get("/usage", params={"status": "ok"}).text, "Requests") == "19"
    assert '<option value="stopped"' in client.get("/usage").text
    rows = list(csv.DictReader(io.StringIO(client.get("/usage.csv").text)))
    outcomes = {r["request_id"] if "request_id" in r else r["id"]: r["outcome"] for r in rows}
    assert sorted(outcomes.values()) == ["error"] + ["ok"] * 19 + ["stopped"]
    assert [r["completion_tokens"] for r in rows if r["outcome"] == "stopped"] == ["1995"]
    stopped_csv = list(csv.DictReader(io.StringIO(client.get("/usage.csv", params={"status": "stopped"}).text)))
    assert len(stopped_csv) == 1


def test_the_charts_show_stops_apart(client: WebClient, web_app: InProcessGateway) -> None:
    _fill(web_app)
    page = client.get("/usage").text
    errors_chart = page.split('id="c-errors-t"')[1].split("</svg>")[0]
    assert "errors: total 1," in errors_chart and "stopped: total 1," in errors_chart
    latency_chart = page.split('id="c-latency-t"')[1].split("</svg>")[0]
    assert "120" not in latency_chart.split("<desc")[1].split("</desc>")[0].replace("1,20", "")
    assert "k ms" not in latency_chart  # no two-minute peak (it would read "1.2e+05" or "120k ms")


def test_a_stopped_stream_keeps_the_tokens_it_generated(web_server: GatewayServer) -> None:
    words = " ".join(f"w{i}" for i in range(40))
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": words}]}
    received = 0
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{web_server.port}", timeout=10) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {ADMIN_KEY}"}) as r,
    ):
        assert r.status_code == 200
        deadline = time.monotonic() + 10
        for line in r.iter_lines():
            if '"content":"' in line.replace(" ", "") and '"content":""' not in line.replace(" ", ""):
                received += 1
            if received >= 4 or time.monotonic() > deadline:
                break
    assert received == 4
    rows = web_server.wait_rows(1)
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == 499
    # The four words the client read were generated and are counted (one more may have been on its way).
    assert row["completion_tokens"] is not None and 4 <= row["completion_tokens"] <= 6
    assert row["total_tokens"] is not None and row["total_tokens"] >= row["completion_tokens"]


def test_a_chat_answer_stopped_in_the_web_ui_is_stopped_with_its_tokens(
    server_client: WebClient, web_server: GatewayServer
) -> None:
    conversation = server_client.new_chat("slow")
    words = " ".join(f"w{i}" for i in range(40))
    fields = {"content": words, "_csrf": server_client.csrf or ""}
    pieces = 0
    with server_client.http.stream(
        "POST", f"/chat/{conversation}/send", data=fields, headers={"hx-request": "true"}
    ) as response:
        assert response.status_code == 200
        deadline = time.monotonic() + 10
        for line in response.iter_lines():
            pieces += line.startswith("data:") and '-text" hx-swap="blocks keep:' in line  # a render per word
            if pieces >= 4 or time.monotonic() > deadline:
                break
    assert pieces >= 4
    row = web_server.wait_rows(1)[0]
    assert row["status"] == 499 and row["completion_tokens"] is not None and row["completion_tokens"] >= 4
    page = server_client.get("/usage").text
    assert _total(page, "Stopped") == "1" and _total(page, "Errors") == "0"


def test_the_usage_page_in_a_browser(browser: Browser, web_server: GatewayServer) -> None:
    rows: list[tuple[str, str, int, float, int | None]] = [(f"ok{i}", "defaults", 200, 90.0 + i, 12) for i in range(8)]
    rows += [("stopped", "slow", 499, 120_000.0, 1995), ("failed", "remote", 502, 40.0, None)]
    _insert(web_server.db_path, rows)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=base_url(web_server))
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    login(tab)
    tab.goto("/usage")
    stopped = tab.locator("table.recent tr.stopped")
    expect(stopped).to_have_count(1)
    expect(stopped.locator(".badge")).to_have_text("stopped")
    assert tab.locator("table.recent tr.err").count() == 1
    SHOTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(SHOTS / "usage-1280.png"), full_page=True)
    tab.set_viewport_size({"width": 390, "height": 844})
    tab.screenshot(path=str(SHOTS / "usage-390.png"))
    stopped.scroll_into_view_if_needed()
    tab.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # drawn, not blank
    tab.screenshot(path=str(SHOTS / "usage-390-stopped.png"))
    context.close()

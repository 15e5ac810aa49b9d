"""The usage page: totals, charts as SVG pictures, filters, paging and CSV export."""

from __future__ import annotations

import csv
import io
import math
import sqlite3

from minigate.gateway.storage import Database
from minigate.gateway.storage.usage_query import Totals
from minigate.web.charts import Series, line_chart, nice_ticks
from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient
from tests.web.usage_rows import fill_usage


def _count(server: InProcessGateway, where: str = "1=1") -> int:
    with sqlite3.connect(server.db_path) as db:
        return int(db.execute(f"SELECT count(*) FROM usage WHERE {where}").fetchone()[0])


def test_totals_match_the_table(client: WebClient, web_app: InProcessGateway) -> None:
    fill_usage(web_app.db_path, 500)
    page = client.get("/usage").text
    assert f'<dd id="total-requests">{_count(web_app):,}</dd>' in page
    assert page.count('<svg class="chart"') == 5 and page.count('class="line ') >= 5
    assert "Latency p50 and p95" in page and "Errors and fallbacks" in page


def test_filters_and_grouping(client: WebClient, web_app: InProcessGateway) -> None:
    fill_usage(web_app.db_path, 500)
    errors = _count(web_app, "status >= 400")
    page = client.get("/usage", params={"status": "error", "by": "key"}).text
    assert f'<dd id="total-requests">{errors:,}</dd>' in page
    assert "no key (bootstrap / web)" in page and "By key" in page
    slow = _count(web_app, "agent = 'slow'")
    assert f'<dd id="total-requests">{slow:,}</dd>' in client.get("/usage", params={"agent": "slow"}).text
    fallbacks = _count(web_app, "fallbacks > 0")
    assert f'<dd id="total-requests">{fallbacks:,}</dd>' in client.get("/usage", params={"fallback": "1"}).text
    remote = _count(web_app, "provider = 'remote' AND model = 'gpt-4o-mini'")
    page = client.get("/usage", params={"model": "remote/gpt-4o-mini", "range": "7d"}).text
    assert f'<dd id="total-requests">{remote:,}</dd>' in page


def test_time_ranges(client: WebClient, web_app: InProcessGateway) -> None:
    fill_usage(web_app.db_path, 300, hours=48)
    day = _count(web_app, "created_at >= datetime('now', '-1 day')")
    for name in ("1h", "24h", "7d", "30d", "bogus"):
        assert client.get("/usage", params={"range": name}).status_code == 200
    total = client.get("/usage", params={"range": "24h"}).text
    shown = int(total.split('<dd id="total-requests">')[1].split("<")[0].replace(",", ""))
    assert abs(shown - day) <= 2  # rows right at the edge of the range may fall either side
    assert f">{_count(web_app):,}<" in client.get("/usage", params={"range": "7d"}).text


def test_recent_requests_page_back(client: WebClient, web_app: InProcessGateway) -> None:
    fill_usage(web_app.db_path, 120)
    page = client.get("/usage").text
    assert page.count("<tr class=") == 50
    older = page.split('href="/usage?')[-1].split('"')[0].replace("&amp;", "&")
    assert "before=" in older
    assert client.get("/usage?" + older).text.count("<tr class=") == 50


def test_csv_export(client: WebClient, web_app: InProcessGateway) -> None:
    fill_usage(web_app.db_path, 2500)
    response = client.get("/usage.csv", params={"range": "7d"})
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == _count(web_app)
    assert {"requested_model", "provider", "status", "latency_ms"} <= set(rows[0])


def test_csv_cells_cannot_become_formulas(client: WebClient, web_app: InProcessGateway) -> None:
    with sqlite3.connect(web_app.db_path) as db:
        db.execute(
            "INSERT INTO usage (request_id, created_at, endpoint, requested_model, fallbacks, status, latency_ms,"
            " streamed) VALUES ('r', datetime('now'), 'chat/completions', '=HYPERLINK(\"http://x\")', 0, 404, 1, 0)"
        )
    text = client.get("/usage.csv").text
    assert "'=HYPERLINK" in text


def test_no_stored_value_breaks_the_page_or_the_csv(client: WebClient, web_app: InProcessGateway) -> None:
    # Two rows of 2**63-1 made GET /usage answer 500 for every range (SQLite's sum() overflowed); negatives,
    # text in an INTEGER column and impossible latencies were stored too, by a gateway without checks or by hand.
    fill_usage(web_app.db_path, 20)
    top = 2**63 - 1
    hostile = [
        (top, top, top, 5.0, 200),
        (top, top, top, -1.0, 200),
        (-1998674, 3, -1998671, 1e300, 200),
        ("lots", "x", "many", "slow", "teapot"),
    ]
    with sqlite3.connect(web_app.db_path) as db:
        db.executemany(
            "INSERT INTO usage (request_id, created_at, endpoint, requested_model, agent, fallbacks, status,"
            " prompt_tokens, completion_tokens, total_tokens, latency_ms, streamed) VALUES (?, datetime('now'),"
            " 'chat/completions', 'm', 'hostile', 0, ?, ?, ?, ?, ?, 0)",
            [(f"h{i}", status, p, c, t, ms) for i, (p, c, t, ms, status) in enumerate(hostile)],
        )
    for params in ({}, {"range": "1h", "by": "model"}, {"agent": "hostile"}, {"key": "9" * 40}, {"before": "9" * 30}):
        page = client.get("/usage", params=params)
        assert page.status_code == 200, (params, page.text[:300])
        assert "-1,998" not in page.text and "9,223,372" not in page.text
    assert '<dd id="total-requests">4</dd>' in client.get("/usage", params={"agent": "hostile"}).text
    export = client.get("/usage.csv", params={"agent": "hostile"})
    assert export.status_code == 200
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 4 and {r["total_tokens"] for r in rows} == {""}


def test_percentiles_from_the_histogram() -> None:
    totals = Totals()
    for latency in [10.0] * 50 + [100.0] * 45 + [1000.0] * 5:
        totals.add(1, 0, 0, 0, int(math.log(latency + 1) * 12))
    p50, p95 = totals.percentile(0.5), totals.percentile(0.95)
    assert p50 is not None and p95 is not None
    assert 9 < p50 < 12 and 92 < p95 < 110
    assert Totals().percentile(0.5) is None


def test_charts_are_svg_with_text_alternatives() -> None:
    chart = str(line_chart("c", "Requests <by> agent", ["a", "b", "c"], [Series("x<script>", [1.0, None, 3.0])]))
    assert chart.startswith('<figure class="chart-box">') and "<svg" in chart and 'role="img"' in chart
    assert "<script>" not in chart and "x&lt;script&gt;" in chart
    assert "<desc" in chart and "total 4" in chart
    assert nice_ticks(7, integer=True) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert nice_ticks(0.3)[-1] >= 0.3


async def test_stats_query_runs_on_sqlite(tmp_path: object) -> None:
    from pathlib import Path

    from minigate.gateway.storage import open_database
    from minigate.gateway.storage.usage_query import Filters, usage_stats

    path = Path(str(tmp_path)) / "u.db"
    database: Database = await open_database(f"sqlite+aiosqlite:///{path}")
    try:
        fill_usage(path, 1000)
        stats = await usage_stats(database, Filters(range="24h", by="provider"), {})
        assert stats.overall.requests == 1000 or 998 <= stats.overall.requests <= 1000
        assert len(stats.labels) == 48 and sum(t.requests for t in stats.per_bucket) == stats.overall.requests
        assert set(stats.groups) <= {"echo", "slow", "remote", "(none)"}
    finally:
        await database.close()

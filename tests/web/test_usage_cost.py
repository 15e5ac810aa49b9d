"""Cost on the usage page: the total, each group's, each request's, the cost chart, and the CSV's cost column."""

from __future__ import annotations

import csv
import io
import sqlite3

from tests.inprocess import InProcessGateway
from tests.web.helpers import WebClient
from tests.web.usage_rows import fill_usage


def test_cost_totals_groups_chart_and_csv(client: WebClient, web_app: InProcessGateway) -> None:
    fill_usage(web_app.db_path, 300)
    with sqlite3.connect(web_app.db_path) as db:
        total = db.execute("SELECT sum(cost) FROM usage").fetchone()[0]
        by_agent = dict(db.execute("SELECT coalesce(agent, '(none)'), sum(coalesce(cost, 0)) FROM usage GROUP BY 1"))
        # a stored cost no check would let in is left out, not a broken page
        db.execute("UPDATE usage SET cost = -5 WHERE id = 1")
        db.execute("UPDATE usage SET cost = 'lots' WHERE id = 2")
    assert total > 0
    page = client.get("/usage?range=24h&by=agent").text
    shown = float(page.split('<dd id="total-cost" title="US dollars, from the price table">$')[1].split("<")[0])
    with sqlite3.connect(web_app.db_path) as db:
        kept = db.execute("SELECT sum(cost) FROM usage WHERE id > 2").fetchone()[0]
    assert abs(shown - kept) < 0.0001
    assert 'id="c-cost-t"' in page and "Cost (US dollars) by agent" in page
    for agent, cost in by_agent.items():
        if cost and agent != "(none)":
            assert f'data-label="Agent">{agent}</th>' in page
    assert page.count('data-label="Cost $"') >= 2
    exported = list(csv.DictReader(io.StringIO(client.get("/usage.csv?range=24h").text)))
    assert "cost" in exported[0]
    assert abs(sum(float(r["cost"]) for r in exported if r["cost"]) - kept) < 1e-6
    assert [r["cost"] for r in exported if r["id"] in ("1", "2")] == ["", ""]

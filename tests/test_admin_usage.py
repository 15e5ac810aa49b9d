"""``/admin/api/usage``, ``/admin/api/usage/summary`` and ``/admin/api/prices`` in process: the usage page's
filters over known rows (the same rows as the page's CSV), paging, totals by every grouping, bad filters refused."""

from __future__ import annotations

import csv
import io
import random
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.web.helpers import PASSWORD, WebClient

CONFIG: dict[str, Any] = {
    "agents": {"defaults": {"model": {"primary": "local/echo"}}, "cloud": {"model": {"primary": "far/gpt-4o"}}},
    "models": {
        "providers": {
            "local": {"type": "fake", "models": ["echo", "other"]},
            "far": {"endpoint": "http://192.0.2.1:9/v1", "models": ["gpt-4o", "house-model"], "timeout": 30},
        },
        "prices": {"local/echo": {"input": 1, "output": 2}, "far/house-*": {"input": 0.5, "output": 0.25}},
    },
}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
COLUMNS = "created_at, key_id, user_id, agent, provider, model, fallbacks, status, prompt_tokens, completion_tokens"
Row = dict[str, Any]


def _rows(count: int) -> list[Row]:
    """Rows over the last 50 hours: three people (one of them none), three keys, errors, stops and fallbacks."""
    rng, now = random.Random(17), datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for i in range(count):
        provider, model = rng.choice([("local", "echo"), ("local", "other"), ("far", "gpt-4o"), (None, None)])
        prompt, completion = rng.randint(1, 500), rng.randint(1, 500)
        rows.append(
            {
                "created_at": now - timedelta(minutes=30 + i * 50 * 60 / count),
                "key_id": rng.choice([None, 1, 2, 3]),
                "user_id": rng.choice([None, 1, 2]),
                "agent": rng.choice(["default", "cloud"]),
                "provider": provider,
                "model": model,
                "fallbacks": rng.choice([0, 0, 0, 1]),
                "status": 502 if provider is None else rng.choice([200, 200, 200, 499, 429]),
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost": rng.choice([None, prompt / 1e6]),
            }
        )
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessGateway, list[Row]]]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
        with InProcessGateway(CONFIG, tmp_path_factory.mktemp("usage")) as app:
            rows = _rows(240)[::-1]  # oldest first, as the gateway appends them
            with sqlite3.connect(app.db_path) as db:
                for row in rows:
                    cursor = db.execute(
                        f"INSERT INTO usage (request_id, endpoint, requested_model, hops, error, total_tokens,"
                        f" latency_ms, ttft_ms, streamed, cost, {COLUMNS}) VALUES ('r', 'chat/completions', 'm',"
                        f" NULL, NULL, ?, 12.5, NULL, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            row["prompt_tokens"] + row["completion_tokens"],
                            row["cost"],
                            row["created_at"].strftime("%Y-%m-%d %H:%M:%S.%f"),
                            *(row[c] for c in COLUMNS.split(", ")[1:]),
                        ),
                    )
                    row["id"] = cursor.lastrowid
            yield app, rows


def get(app: InProcessGateway, path: str, token: str = ADMIN_KEY, **params: Any) -> httpx.Response:
    return app.http.get(f"/admin/api{path}", params=params, headers={"authorization": f"Bearer {token}"})


def _recent(rows: list[Row], hours: int) -> list[Row]:
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=hours)
    return [r for r in rows if r["created_at"] >= since]


FILTERS: list[tuple[dict[str, str], Callable[[Row], bool]]] = [
    ({}, lambda r: True),
    ({"user": "1"}, lambda r: r["user_id"] == 1),
    ({"user": "none"}, lambda r: r["user_id"] is None),
    ({"key": "2"}, lambda r: r["key_id"] == 2),
    ({"key": "none", "agent": "cloud"}, lambda r: r["key_id"] is None and r["agent"] == "cloud"),
    ({"model": "local/echo"}, lambda r: (r["provider"], r["model"]) == ("local", "echo")),
    ({"provider": "far"}, lambda r: r["provider"] == "far"),
    ({"status": "ok"}, lambda r: r["status"] < 400),
    ({"status": "error"}, lambda r: r["status"] >= 400 and r["status"] != 499),
    ({"status": "stopped", "fallback": "true"}, lambda r: r["status"] == 499 and r["fallbacks"] > 0),
    ({"key": "99999999999"}, lambda r: False),
]


@pytest.mark.parametrize(("query", "wanted"), FILTERS, ids=[str(q) for q, _ in FILTERS])
def test_rows_match_the_filters_page_by_page(
    world: tuple[InProcessGateway, list[Row]], query: dict[str, str], wanted: Callable[[Row], bool]
) -> None:
    app, rows = world
    expected = sorted((r["id"] for r in _recent(rows, 24 * 7) if wanted(r)), reverse=True)
    seen: list[int] = []
    before: int | None = None
    for _ in range(100):  # pages of 7: at most 240 rows
        answer = get(app, "/usage", range="7d", limit=7, **query, **({"before": before} if before else {}))
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["rows"]) <= 7
        seen += [row["id"] for row in page["rows"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == expected


def test_a_row_as_the_api_shows_it(world: tuple[InProcessGateway, list[Row]]) -> None:
    app, rows = world
    newest = max(rows, key=lambda r: r["id"])
    shown = get(app, "/usage", limit=1).json()["rows"][0]
    assert shown["id"] == newest["id"] and shown["status"] == newest["status"]
    assert shown["user_id"] == newest["user_id"] and shown["key_id"] == newest["key_id"]
    assert shown["total_tokens"] == newest["prompt_tokens"] + newest["completion_tokens"]
    assert shown["cost"] == newest["cost"] and shown["latency_ms"] == 12.5 and shown["streamed"] is False
    assert shown["outcome"] == {200: "ok", 499: "stopped"}.get(newest["status"], "error")
    assert shown["created_at"].startswith(newest["created_at"].strftime("%Y-%m-%dT%H:%M"))


def test_the_api_and_the_pages_csv_list_the_same_rows(world: tuple[InProcessGateway, list[Row]]) -> None:
    app, _ = world
    admin = WebClient(app)
    assert admin.login().status_code == 303
    for query, _ in FILTERS:
        params = {"range": "30d", **query}
        page_ids = [
            int(line["id"]) for line in csv.DictReader(io.StringIO(admin.get("/usage.csv", params=params).text))
        ]
        api_ids = [row["id"] for row in get(app, "/usage", limit=1000, **params).json()["rows"]]
        assert api_ids == page_ids, query
    admin.close()


GROUPS: dict[str, Callable[[Row], Any]] = {
    "person": lambda r: r["user_id"],
    "key": lambda r: r["key_id"],
    "agent": lambda r: r["agent"],
    "model": lambda r: f"{r['provider']}/{r['model']}" if r["provider"] else "(none)",
    "provider": lambda r: r["provider"] or "(none)",
    "day": lambda r: r["created_at"].date().isoformat(),
}


@pytest.mark.parametrize("group_by", list(GROUPS))
def test_summary_totals_by_every_grouping(world: tuple[InProcessGateway, list[Row]], group_by: str) -> None:
    app, rows = world
    answer = get(app, "/usage/summary", group_by=group_by, range="24h")
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    expected: dict[Any, dict[str, Any]] = {}
    for r in _recent(rows, 24):
        group = expected.setdefault(GROUPS[group_by](r), {"requests": 0, "total_tokens": 0, "cost": 0.0, "errors": 0})
        group["requests"] += 1
        group["total_tokens"] += r["prompt_tokens"] + r["completion_tokens"]
        group["cost"] += r["cost"] or 0.0
        group["errors"] += r["status"] >= 400 and r["status"] != 499
    got = {g["group"]: g for g in summary["groups"]}
    assert set(got) == set(expected)
    for name, totals in expected.items():
        assert got[name]["requests"] == totals["requests"] and got[name]["errors"] == totals["errors"]
        assert got[name]["total_tokens"] == totals["total_tokens"]
        assert got[name]["cost"] == pytest.approx(totals["cost"])
    assert summary["total"]["requests"] == len(_recent(rows, 24)) == sum(g["requests"] for g in got.values())
    if group_by == "day":
        assert [g["group"] for g in summary["groups"]] == sorted(got)
    else:
        assert [g["requests"] for g in summary["groups"]] == sorted((g["requests"] for g in got.values()), reverse=True)


def test_a_from_to_window_selects_its_rows(world: tuple[InProcessGateway, list[Row]]) -> None:
    """``from``/``to`` pick any window (the end excluded); ``range`` alone ends at ``to``; no offset means UTC."""
    app, rows = world
    ordered = sorted(rows, key=lambda r: r["created_at"])
    start, end = ordered[40]["created_at"], ordered[120]["created_at"]  # naive UTC, as stored
    inside = {r["id"] for r in rows if start <= r["created_at"] < end}
    assert len(inside) == 80
    for shown_start, shown_end in ((start.isoformat(), end.isoformat()), (f"{start.isoformat()}+00:00", None)):
        params = {"from": shown_start, "to": shown_end or (end + timedelta(hours=2)).isoformat() + "+02:00"}
        listed = {r["id"] for r in get(app, "/usage", limit=1000, **params).json()["rows"]}
        assert listed == inside, params
        summary = get(app, "/usage/summary", group_by="day", **params).json()
        assert summary["total"]["requests"] == len(inside)
        assert summary["start"].startswith(start.isoformat()[:19]) and summary["end"].startswith(end.isoformat()[:19])
    hour_before_end = {r["id"] for r in rows if end - timedelta(hours=1) <= r["created_at"] < end}
    listed = {r["id"] for r in get(app, "/usage", limit=1000, range="1h", to=end.isoformat()).json()["rows"]}
    assert listed == hour_before_end and listed


@pytest.mark.parametrize(
    "window",
    [
        {"from": "2026-12-02", "to": "2026-12-01"},
        {"from": "yesterday"},
        {"to": "2026-13-01T00:00"},
        {"to": "0001-01-01"},
        {"from": "9999-12-31T23:00-05:00"},
    ],
)
def test_a_bad_window_is_a_400(world: tuple[InProcessGateway, list[Row]], window: dict[str, str]) -> None:
    app, _ = world
    for path in ("/usage", "/usage/summary"):
        answer = get(app, path, **window)
        assert answer.status_code == 400, (path, window, answer.text)
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


def test_summary_names_keys_and_people(world: tuple[InProcessGateway, list[Row]]) -> None:
    app, _ = world
    for name in ("nina", "omar"):  # the rows name people 1 and 2, and keys 1 to 3
        app.http.post("/admin/api/users", headers=ADMIN, json={"name": name, "password": "long-enough-pw"})
    for name in ("k1", "k2"):
        app.http.post("/admin/api/keys", headers=ADMIN, json={"name": name})
    people = {u["id"]: u["name"] for u in get(app, "/users").json()["users"]}
    keys = {k["id"]: k["name"] for k in get(app, "/keys").json()["keys"]}
    for group_by, names in (("person", people), ("key", keys)):
        groups = get(app, "/usage/summary", group_by=group_by, range="30d").json()["groups"]
        assert {g["group"] for g in groups} & set(names), group_by  # some are named...
        for g in groups:
            assert g["name"] == names.get(g["group"]), (group_by, g)  # ...each by its own name; none: null


@pytest.mark.parametrize(
    "params",
    [
        {"range": "2d"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "many"},
        {"before": "-3"},
        {"key": "abc"},
        {"user": "1; drop table usage"},
        {"status": "broken"},
        {"fallback": "perhaps"},
        {"agent": "x" * 301},
    ],
    ids=lambda p: next(iter(p)),
)
def test_bad_filters_are_400_in_the_error_shape(
    world: tuple[InProcessGateway, list[Row]], params: dict[str, str]
) -> None:
    app, _ = world
    for path in ("/usage", "/usage/summary") if {"limit", "before"}.isdisjoint(params) else ("/usage",):
        answer = get(app, path, **params)
        assert answer.status_code == 400, (path, params, answer.text)
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert get(app, "/usage/summary", group_by="hour").status_code == 400


def test_prices_say_where_each_comes_from(world: tuple[InProcessGateway, list[Row]]) -> None:
    app, _ = world
    answer = get(app, "/prices")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    effective = {e["model"]: e for e in body["effective"]}
    assert effective["local/echo"] == {
        "model": "local/echo",
        "input": 1.0,
        "output": 2.0,
        "source": "config",
        "entry": "local/echo",
    }
    assert effective["local/other"] == {
        "model": "local/other",
        "input": 0.0,
        "output": 0.0,
        "source": "local",
        "entry": None,
    }
    assert effective["far/gpt-4o"]["source"] == "shipped" and effective["far/gpt-4o"]["entry"] == "gpt-4o*"
    assert effective["far/gpt-4o"]["input"] == body["shipped"]["gpt-4o*"]["input"]
    assert effective["far/house-model"]["source"] == "config" and effective["far/house-model"]["entry"] == "far/house-*"
    assert body["configured"] == {
        "local/echo": {"input": 1.0, "output": 2.0},
        "far/house-*": {"input": 0.5, "output": 0.25},
    }
    assert body["free_local_providers"] == ["local"] and body["shipped_taken"]


def test_unpriced_models_say_so(tmp_path_factory: pytest.TempPathFactory) -> None:
    config = {"models": {"providers": {"far": {"endpoint": "http://192.0.2.1:9/v1", "models": ["house-model"]}}}}
    config["agents"] = {"defaults": {"model": {"primary": "far/house-model"}}}
    with InProcessGateway(config, tmp_path_factory.mktemp("unpriced")) as app:
        effective = get(app, "/prices").json()["effective"]
    assert effective == [{"model": "far/house-model", "input": None, "output": None, "source": "none", "entry": None}]


def test_only_admin_keys_pass(world: tuple[InProcessGateway, list[Row]]) -> None:
    app, _ = world
    plain = app.http.post("/admin/api/keys", headers=ADMIN, json={"name": "plain"}).json()["key"]
    for path in ("/usage", "/usage/summary", "/prices"):
        answer = get(app, path, token=plain)
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "admin_required"
        assert "rows" not in answer.text and "groups" not in answer.text
        assert app.http.get(f"/admin/api{path}").status_code == 401

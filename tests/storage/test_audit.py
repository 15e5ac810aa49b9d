"""AuditLog on SQLite and PostgreSQL: entries written in the background and at once, read newest first with filters
and paging; safe_details keeps names and hides secrets."""

from __future__ import annotations

from minigate.gateway.storage import Database
from minigate.gateway.storage.audit import AuditEntry, AuditLog, safe_details


def test_safe_details_keeps_names_and_hides_secrets() -> None:
    fields = {
        "name": "ops",
        "password": "hunter2-hunter2",
        "api_key": "abc",
        "secret": "s",
        "key": "k",
        "key_id": 3,
        "policy": {"daily_tokens": 100, "models": ["local/*"], "token": "t"},
        "note": "mg-" + "A" * 40,  # a key in a field of any name
        "long": "x" * 1000,
    }
    assert safe_details(fields) == {
        "name": "ops",
        "password": "[hidden]",
        "api_key": "[hidden]",
        "secret": "[hidden]",
        "key": "[hidden]",
        "key_id": 3,
        "policy": {"daily_tokens": 100, "models": ["local/*"], "token": "[hidden]"},
        "note": "[key]",
        "long": "x" * 200,
    }


def _entry(n: int, actor: str = "admin", action: str = "POST /users") -> AuditEntry:
    return AuditEntry(via="web", actor=actor, actor_kind="admin", action=action, status=200, target=f"n={n}\x00")


async def test_entries_are_stored_and_read_newest_first(db: Database) -> None:
    log = AuditLog(db)
    log.start()
    for n in range(3):
        log.note(_entry(n))
    await log.write(_entry(3, actor="cli (root)", action="users create"))
    await log.close()  # stores what is still queued
    rows = await log.page()
    assert sorted(r["target"] for r in rows) == [
        "n=0\ufffd",
        "n=1\ufffd",
        "n=2\ufffd",
        "n=3\ufffd",
    ]  # NUL stored as U+FFFD
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    assert [r["actor"] for r in await log.page(actor="cli (root)")] == ["cli (root)"]
    assert len(await log.page(action="users")) == 4  # "POST /users" and "users create"
    assert await log.page(action="100%_") == []  # LIKE's wildcards are plain characters
    first = await log.page(limit=2)
    rest = await log.page(limit=2, before=first[-1]["id"])
    assert len(first) == 2 and len(rest) == 2 and not {r["id"] for r in first} & {r["id"] for r in rest}
    assert await log.actors() == ["admin", "cli (root)"]


async def test_details_too_large_keep_their_field_names(db: Database) -> None:
    log = AuditLog(db)
    entry = _entry(0)
    entry.details = {f"field{n}": "v" * 190 for n in range(30)}
    await log.write(entry)
    (row,) = await log.page()
    assert row["details"]["cut"] is True and row["details"]["fields"][:2] == ["field0", "field1"]

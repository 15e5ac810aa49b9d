"""KeyStore: create, verify, list, revoke, the verification cache and hostile tokens (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import unicodedata
from typing import Any

import pytest
from sqlalchemy import event

from minigate.gateway.storage import Database, KeyStore, open_database
from tests.storage.conftest import Backend

MALFORMED = [
    "",
    "' OR 1=1--",
    "mg-' OR '1'='1",
    "mg-" + "A" * 10_240,  # 10 KB
    "mg-abcdefghijklmnopqrstuvwxyz\x00",
    "\x00",
    "mg-\u0430bcdefghijklmnopqrstuvwxyz",  # Cyrillic a
    "mg-abcdefghijklmnopqrstuvwxyz\u200b",  # zero-width space
    "\uff4d\uff47-abcdefghijklmnopqrstuvwxyz",  # fullwidth "mg"
    "mg-abcdefghijklmnop qrstuvwxyz",
    "Bearer mg-abcdefghijklmnopqrstuvwxyz",
]


async def test_create_verify_list_revoke(db: Database) -> None:
    keys = KeyStore(db)
    info, token = await keys.create("alice laptop")
    assert token.startswith("mg-") and len(token) >= 40
    assert info.prefix == token[:10]
    assert info.name == "alice laptop" and info.active
    assert await keys.verify(token) == info.id

    other, other_token = await keys.create("ci")
    assert other_token != token and other.id != info.id
    listed = await keys.list()
    assert [(k.id, k.name, k.prefix, k.revoked_at) for k in listed] == [
        (info.id, "alice laptop", info.prefix, None),
        (other.id, "ci", other.prefix, None),
    ]
    assert listed[0].created_at == info.created_at

    assert await keys.revoke(info.id) is True
    assert await keys.revoke(info.id) is False  # already revoked
    assert await keys.revoke(9999) is False  # no such key
    assert await keys.verify(token) is None  # this store forgets the key at once
    assert await keys.verify(other_token) == other.id
    revoked = (await keys.list())[0]
    assert revoked.revoked_at is not None and not revoked.active


async def test_revocation_by_another_store_respects_ttl(db: Database) -> None:
    cli = KeyStore(db)  # stands in for the CLI process
    uncached = KeyStore(db, cache_ttl=0)
    cached = KeyStore(db, cache_ttl=3600)
    short = KeyStore(db, cache_ttl=0.05)
    info, token = await cli.create("k")
    for store in (uncached, cached, short):
        assert await store.verify(token) == info.id

    assert await cli.revoke(info.id)
    assert await uncached.verify(token) is None
    assert await cached.verify(token) == info.id  # still within its TTL
    await asyncio.sleep(0.1)
    assert await short.verify(token) is None


async def test_unknown_token_is_rejected(db: Database) -> None:
    keys = KeyStore(db)
    await keys.create("k")
    assert await keys.verify("mg-" + secrets.token_urlsafe(32)) is None


async def test_only_the_hash_is_stored(db: Database, backend: Backend) -> None:
    keys = KeyStore(db)
    _, token = await keys.create("secret")
    await db.close()  # on SQLite: checkpoints the WAL into the main file
    digest = hashlib.sha256(token.encode()).hexdigest()
    if backend.name == "sqlite":
        path = backend.sqlite_path
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        blob = b"".join(p.read_bytes() for p in files)
        assert digest.encode() in blob  # the scan does see the table
        assert token.encode() not in blob
        assert token[3:].encode() not in blob  # nor the random part alone
    # Every value of every table, as text.
    dump = "\n".join(str(row) for table in sorted(backend.tables()) for row in backend.rows(f"SELECT * FROM {table}"))
    assert digest in dump
    assert token not in dump and token[3:] not in dump


@pytest.mark.parametrize("token", MALFORMED)
async def test_malformed_tokens_never_reach_the_database(db: Database, token: str) -> None:
    keys = KeyStore(db, cache_ttl=0)
    _, real = await keys.create("k")
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    assert await keys.verify(token) is None
    assert statements == []
    assert await keys.verify(real) is not None  # the control: a well-formed token does query
    assert len(statements) == 1
    assert real not in statements[0]  # bound parameter, never spliced into the SQL


@pytest.mark.parametrize("token", MALFORMED)
async def test_malformed_tokens_rejected_with_keys_present(db: Database, token: str) -> None:
    keys = KeyStore(db)
    await keys.create("k")
    assert await keys.verify(token) is None


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


async def test_look_alikes_of_a_real_key_are_rejected(db: Database) -> None:
    keys = KeyStore(db)
    info, token = await keys.create("k")
    wide = _fullwidth(token)
    assert unicodedata.normalize("NFKC", wide) == token  # would pass a normalising comparison
    cyrillic = token[:3] + "\u0430" + token[4:]  # one character swapped for a Cyrillic a
    for fake in (wide, cyrillic, token + "\x00", " " + token, token + "\n"):
        assert await keys.verify(fake) is None
    assert await keys.verify(token) == info.id


async def test_cache_is_bounded(db: Database) -> None:
    keys = KeyStore(db, cache_size=10)
    info, token = await keys.create("k")
    for _ in range(25):
        assert await keys.verify("mg-" + secrets.token_urlsafe(32)) is None
        assert len(keys._cache) <= 10
    assert await keys.verify(token) == info.id


async def test_last_used_is_flushed_in_batches(db: Database) -> None:
    keys = KeyStore(db)
    a, token_a = await keys.create("a")
    b, _ = await keys.create("b")
    assert await keys.flush_last_used() == 0
    for _ in range(5):
        await keys.verify(token_a)
    assert (await keys.list())[0].last_used_at is None  # verify itself never writes
    assert await keys.flush_last_used() == 1
    listed = {k.id: k for k in await keys.list()}
    assert listed[a.id].last_used_at is not None
    assert listed[b.id].last_used_at is None


async def test_name_is_validated(db: Database) -> None:
    keys = KeyStore(db)
    with pytest.raises(ValueError):
        await keys.create("   ")
    with pytest.raises(ValueError):
        await keys.create("x" * 201)


async def test_a_key_made_by_one_replica_works_on_another(backend: Backend) -> None:
    # Two gateways over one database (two processes in real life; two engines here): creation and revocation
    # reach the other within its cache TTL.
    first, second = await open_database(backend.url), await open_database(backend.url)
    try:
        a, b = KeyStore(first), KeyStore(second, cache_ttl=0.05)
        info, token = await a.create("shared", admin=True)
        assert await b.identify(token) == (info.id, True)
        assert [k.id for k in await b.list()] == [info.id]
        assert await b.revoke(info.id)
        assert await a.verify(token) is None
    finally:
        await first.close()
        await second.close()


async def test_last_used_never_goes_back(db: Database) -> None:
    # Replicas flush last_used_at on their own schedules: an older time flushed late must not win.
    fast, late = KeyStore(db), KeyStore(db)
    _, token = await fast.create("k")
    await late.verify(token)  # seen first by this replica...
    await asyncio.sleep(0.05)
    await fast.verify(token)  # ...then by this one
    assert await fast.flush_last_used() == 1
    newest = (await fast.list())[0].last_used_at
    assert await late.flush_last_used() == 1  # the older time, flushed afterwards
    assert (await fast.list())[0].last_used_at == newest

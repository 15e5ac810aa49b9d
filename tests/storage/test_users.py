"""UserStore: scrypt hashes, create/list/disable/enable/passwords, and what a person's state does to their keys
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from minigate.gateway.storage import Database, KeyStore
from minigate.gateway.storage.responses import ResponseStore
from minigate.gateway.storage.users import (
    MIN_PASSWORD,
    UserStore,
    check_password,
    hash_password,
    owner_user,
    user_owner,
)


def test_the_hash_describes_itself_and_is_salted() -> None:
    stored = hash_password("correct horse")
    kind, n, r, p, salt, digest = stored.split("$")
    assert (kind, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)
    assert len(salt) == 22 and len(digest) == 43  # 16 and 32 bytes, base64 without padding
    assert hash_password("correct horse") != stored  # a fresh salt each time
    assert check_password("correct horse", stored)
    assert not check_password("correct horsE", stored)
    assert not check_password("correct horse ", stored)


@pytest.mark.parametrize(
    "stored",
    [None, "", "scrypt", "bcrypt$1$2$3$AAAA$AAAA", "scrypt$x$8$1$AAAA$AAAA", "scrypt$16384$8$1$!!$AAAA", "a$b"],
)
def test_a_malformed_or_missing_hash_never_matches(stored: str | None) -> None:
    assert check_password("anything", stored) is False


def test_owner_names() -> None:
    assert user_owner(7) == "user:7" and owner_user("user:7") == 7
    assert owner_user("admin") is None and owner_user("guest:abc") is None and owner_user("user:x") is None


async def test_create_list_authenticate(db: Database) -> None:
    users = UserStore(db)
    alice = await users.create("alice", "alice-password", admin=True)
    bob = await users.create("bob.smith@home", "b" * MIN_PASSWORD)  # exactly the shortest password taken
    assert alice.admin and not bob.admin and alice.active and alice.owner == f"user:{alice.id}"
    assert [(u.id, u.name) for u in await users.list()] == [(alice.id, "alice"), (bob.id, "bob.smith@home")]
    assert (await users.by_name("alice")) == alice
    assert await users.get(bob.id) == bob
    assert await users.authenticate("alice", "alice-password") == alice
    assert await users.authenticate("alice", "bob-password") is None
    assert await users.authenticate("ALICE", "alice-password") is None  # names are exact
    assert await users.authenticate("carol", "alice-password") is None
    assert await users.authenticate("bob.smith@home", "b" * MIN_PASSWORD) == bob


@pytest.mark.parametrize(
    ("name", "password"),
    [
        ("", "long-enough"),
        (" alice", "long-enough"),
        ("-alice", "long-enough"),
        ("al ice", "long-enough"),
        ("a" * 101, "long-enough"),
        ("al\x00ice", "long-enough"),
        ("alïce", "long-enough"),
        ("alice", "s" * (MIN_PASSWORD - 1)),  # one short of the shortest
        ("alice", "s" * 1025),
    ],
)
async def test_bad_names_and_passwords_are_refused(db: Database, name: str, password: str) -> None:
    with pytest.raises(ValueError):
        await UserStore(db).create(name, password)
    assert await UserStore(db).list() == []


async def test_a_name_is_taken_once(db: Database) -> None:
    users = UserStore(db)
    await users.create("alice", "alice-password")
    with pytest.raises(ValueError, match="already"):
        await users.create("alice", "other-password")
    assert len(await users.list()) == 1


async def test_disable_enable_and_a_new_password(db: Database) -> None:
    users = UserStore(db)
    alice = await users.create("alice", "alice-password")
    assert await users.disable(alice.id) is True
    assert await users.disable(alice.id) is False  # already
    assert await users.authenticate("alice", "alice-password") is None
    assert not (await users.get(alice.id) or alice).active
    assert await users.enable(alice.id) is True and await users.enable(alice.id) is False
    assert await users.set_password(alice.id, "a-new-password") is True
    assert await users.authenticate("alice", "alice-password") is None
    assert await users.authenticate("alice", "a-new-password") is not None
    assert await users.set_password(9999, "a-new-password") is False
    with pytest.raises(ValueError):
        await users.set_password(alice.id, "short")


async def test_keys_belong_to_a_person_and_stop_with_them(db: Database) -> None:
    users, keys = UserStore(db), KeyStore(db, cache_ttl=0)
    alice = await users.create("alice", "alice-password")
    bob = await users.create("bob", "bob-password")
    a_key, a_token = await keys.create("alice laptop", user_id=alice.id)
    b_key, _ = await keys.create("bob laptop", user_id=bob.id)
    admin_key, admin_token = await keys.create("admin's")
    assert [k.id for k in await keys.list(user_id=alice.id)] == [a_key.id]
    assert [k.user_id for k in await keys.list()] == [alice.id, bob.id, None]
    assert await keys.identify(a_token) == (a_key.id, False) and keys.user_of(a_key.id) == alice.id
    assert await keys.identify(admin_token) == (admin_key.id, False) and keys.user_of(admin_key.id) is None
    assert await keys.revoke(b_key.id, user_id=alice.id) is False  # not alice's: untouched
    assert (await keys.list(user_id=bob.id))[0].active
    await users.disable(alice.id)
    assert await keys.identify(a_token) is None  # a disabled person's keys stop
    await users.enable(alice.id)
    assert await keys.identify(a_token) == (a_key.id, False)
    assert await keys.revoke(a_key.id, user_id=alice.id) is True


async def test_checking_a_password_leaves_the_event_loop_free(db: Database) -> None:
    users = UserStore(db)
    await users.create("alice", "alice-password")
    ticks: list[float] = []

    async def tick() -> None:
        for _ in range(1000):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.002)

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    for _ in range(3):
        assert await users.authenticate("alice", "alice-password") is not None
    took = time.monotonic() - started
    ticker.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert took > 0.03  # scrypt did real work
    assert max(gaps) < took / 2, (max(gaps), took)  # the loop went on while it did


async def test_a_persons_keys_share_their_stored_responses(db: Database) -> None:
    users, keys, responses = UserStore(db), KeyStore(db), ResponseStore(db)
    alice, bob = await users.create("alice", "alice-password"), await users.create("bob", "bob-password")
    laptop, _ = await keys.create("laptop", user_id=alice.id)
    phone, _ = await keys.create("phone", user_id=alice.id)
    bobs, _ = await keys.create("bob's", user_id=bob.id)
    await responses.save(laptop.id, [{"role": "user", "content": "hi"}], {"id": "resp_1", "output": []})
    assert await responses.get(phone.id, "resp_1") is None  # by key alone: the laptop's only
    assert await responses.get(phone.id, "resp_1", alice.id) is not None  # by person: any key of hers
    assert await responses.get(bobs.id, "resp_1", bob.id) is None
    assert await responses.delete(bobs.id, "resp_1", bob.id) is False
    assert await responses.delete(phone.id, "resp_1", alice.id) is True
    assert await responses.get(laptop.id, "resp_1", alice.id) is None

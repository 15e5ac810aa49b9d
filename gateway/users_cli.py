"""``minigate users``: create, list, disable, enable people, set their passwords and their own limits, on the
configured database."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from minigate.gateway.config.schema import Config
from minigate.gateway.keys_cli import add_policy_options, describe, updated_policy
from minigate.gateway.storage.db import Database

__all__ = ["add_users_parser", "cli_audit", "person_id", "run_users"]


def add_users_parser(sub: Any, config_help: str) -> None:
    """Add ``users`` and its subcommands to the command line's subparsers ``sub``."""
    users = sub.add_parser("users", help="manage the people who log in")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    create = users_sub.add_parser("create", help="add a person (asks for the password)")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="the person sees and manages everyone")
    create.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    listing = users_sub.add_parser("list", help="list people")
    disable = users_sub.add_parser("disable", help="disable a person: no login, no session, no key of theirs")
    disable.add_argument("name")
    enable = users_sub.add_parser("enable", help="let a disabled person in again")
    enable.add_argument("name")
    passwd = users_sub.add_parser("passwd", help="set a person's password (asks for it)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
    limits = users_sub.add_parser(
        "set-policy", help="set a person's own limits: over their web chat and all their keys together"
    )
    limits.add_argument("name")
    limits.add_argument("--clear", action="store_true", help="start from no limits (then apply the options given)")
    add_policy_options(limits, expiry=False)
    for p in (create, listing, disable, enable, passwd, limits):
        p.add_argument("--config", help=config_help)


async def person_id(database: Database, name: str) -> int | None:
    """The id of the person called ``name`` (``keys create --user``), or None."""
    from minigate.gateway.storage.users import UserStore

    found = await UserStore(database).by_name(name)
    return None if found is None else found.id


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor the password database
        return f"uid {os.getuid()}"


async def cli_audit(
    database: Database, action: str, status: int, target: str | None = None, details: dict[str, Any] | None = None
) -> None:
    """Record a command's admin action (``status``: 200 done, 404 nothing to act on, 422 refused) in the audit
    log, by the actor ``cli`` and the OS user who ran it."""
    from minigate.gateway.storage.audit import AuditEntry, AuditLog, safe_details

    entry = AuditEntry(
        via="cli",
        actor=f"cli ({_os_user()})",
        actor_kind="cli",
        action=action,
        status=status,
        target=target,
        details=safe_details(details) if details else None,
    )
    await AuditLog(database).write(entry)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _fail(message: str) -> int:
    print(f"minigate: {message}", file=sys.stderr)
    return 1


async def run_users(args: argparse.Namespace, config: Config) -> int:
    """Run ``minigate users ...``; returns the exit code."""
    from minigate.gateway.storage import open_database
    from minigate.gateway.storage.users import UserStore

    database = await open_database(config.database_url())
    try:
        store = UserStore(database)
        command = args.users_command
        if command == "list":
            print(f"{'ID':>4}  {'NAME':<24} {'ROLE':<6} {'CREATED (UTC)':<19}  {'STATUS':<24}  LIMITS")
            for person in await store.list():
                status = f"disabled {person.disabled_at:%Y-%m-%d %H:%M}" if person.disabled_at else "active"
                role = "admin" if person.admin else "person"
                made = f"{person.created_at:%Y-%m-%d %H:%M:%S}"
                limits = describe(person.policy, None)
                print(f"{person.id:>4}  {person.name:<24} {role:<6} {made}  {status:<24}  {limits}")
            return 0
        action, target = f"users {command}", f"name={args.name}"
        given = {"name": args.name, **({"admin": args.admin} if command == "create" else {})}
        if command in ("create", "passwd"):
            given["password"] = "[hidden]"
        if command == "create":
            try:
                created = await store.create(args.name, _password(args), admin=args.admin)
            except ValueError:
                await cli_audit(database, action, 422, target, given)
                raise
            await cli_audit(database, action, 200, f"user_id={created.id}", given)
            print(f"created {'admin' if created.admin else 'person'} {created.id} ({created.name})")
            return 0
        found = await store.by_name(args.name)
        if found is None:
            await cli_audit(database, action, 404, target, given)
            return _fail(f"there is nobody called {args.name!r}")
        person = found
        target = f"user_id={person.id}"
        if command == "passwd":
            try:
                await store.set_password(person.id, _password(args))
            except ValueError:
                await cli_audit(database, action, 422, target, given)
                raise
            print(f"{person.name} has a new password")
        elif command == "disable":
            if not await store.disable(person.id):
                await cli_audit(database, action, 409, target, given)
                return _fail(f"{person.name} is disabled already")
            print(f"disabled {person.name}; their sessions and keys stop working")
        elif command == "set-policy":
            policy, _ = updated_policy(person.policy, args)
            await store.set_policy(person.id, policy)
            print(f"{person.name}: {describe(policy, None)} (a running gateway applies it within 2 s)")
        elif command == "enable":
            if not await store.enable(person.id):
                await cli_audit(database, action, 409, target, given)
                return _fail(f"{person.name} is not disabled")
            print(f"enabled {person.name}")
        await cli_audit(database, action, 200, target, given)
        return 0
    except ValueError as err:
        return _fail(str(err))
    finally:
        await database.close()

"""The policy options of ``minigate keys create|set-policy`` and ``minigate users set-policy``, and how the lists show
them."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

import msgspec

from minigate.gateway.storage.key_policy import KeyPolicy, encode_policy, parse_expiry, policy_from

__all__ = ["add_policy_options", "describe", "policy_args", "updated_policy"]

_LIMITS = (
    ("--rpm", int, "requests per minute"),
    ("--tpm", int, "tokens per minute"),
    ("--concurrency", int, "requests at once"),
    ("--daily-tokens", int, "tokens per UTC day"),
    ("--monthly-tokens", int, "tokens per calendar month (UTC)"),
    ("--daily-usd", float, "US dollars per UTC day (from the price table)"),
    ("--monthly-usd", float, "US dollars per calendar month (UTC)"),
)


def add_policy_options(parser: argparse.ArgumentParser, *, expiry: bool = True) -> None:
    """The options that set a key's policy and expiry (a person's policy: ``expiry=False``)."""
    parser.add_argument("--models", help="allowed models, agents or patterns, comma-separated (e.g. 'local/*,default')")
    parser.add_argument(
        "--remote",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether the key may reach remote providers (--no-remote: local deployments only)",
    )
    for flag, kind, what in _LIMITS:
        parser.add_argument(flag, type=kind, help=f"at most this many {what}")
    if expiry:
        parser.add_argument("--expires", help="expiry date YYYY-MM-DD or ISO time, UTC ('never' to clear)")


def _given(args: argparse.Namespace) -> dict[str, Any]:
    given: dict[str, Any] = {}
    if args.models is not None:
        given["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.remote is not None:
        given["remote"] = args.remote
    for flag, _, _ in _LIMITS:
        name = flag[2:].replace("-", "_")
        if getattr(args, name) is not None:
            given[name] = getattr(args, name)
    return given


def _expiry(args: argparse.Namespace) -> datetime | bool | None:
    if getattr(args, "expires", None) is None:
        return False
    return None if args.expires.strip().lower() == "never" else parse_expiry(args.expires)


def policy_args(args: argparse.Namespace) -> dict[str, Any]:
    """``policy`` and ``expires_at`` for ``KeyStore.create``; ValueError when an option is wrong."""
    expires = _expiry(args)
    return {"policy": policy_from(_given(args)), "expires_at": None if expires is False else expires}


def updated_policy(
    current: KeyPolicy | None, args: argparse.Namespace
) -> tuple[KeyPolicy | None, datetime | bool | None]:
    """The policy after ``set-policy``: the options given replace those values (``--clear`` starts from none)."""
    base = {} if args.clear or current is None else msgspec.to_builtins(current)
    return policy_from({**base, **_given(args)}), _expiry(args)


def describe(policy: KeyPolicy | None, expires_at: datetime | None) -> str:
    """One line for ``keys list``."""
    parts = [encode_policy(policy) or "no limits"]
    if expires_at is not None:
        parts.append(f"expires {expires_at:%Y-%m-%d %H:%M} UTC")
    return "; ".join(parts)

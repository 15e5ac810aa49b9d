"""Logging in (a person's name and password; or, with no name, the admin password, an admin API key or the
bootstrap key) and out.

The login form itself is protected against cross-site posting by a double-submit token (a cookie and a
hidden field that must match) on top of the origin check, since there is no session yet to hold a token.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage.logins import LoginThrottle
from minigate.gateway.storage.users import UserStore
from minigate.web.auth import check_csrf, safe_next, same_site, sessions
from minigate.web.render import page, redirect
from minigate.web.sessions import COOKIE, Session
from minigate.web.state import WebState

__all__ = ["login_handlers"]

_LOGIN_COOKIE = "mg_login"


def _session_cookie(request: Request[Any, Any, Any], value: str, max_age: int) -> Cookie:
    return Cookie(
        key=COOKIE,
        value=value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


async def _login_page(
    request: Request[Any, Any, Any], web: WebState, gateway: Gateway, next_path: str, error: str | None = None
) -> Response[str]:
    token = secrets.token_urlsafe(24)
    cookie = Cookie(
        key=_LOGIN_COOKIE,
        value=token,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return page(
        web,
        "login.html",
        None,
        status=401 if error else 200,
        cookies=[cookie],
        login_token=token,
        next_path=next_path,
        error=error,
        password_set=bool(web.settings.admin_password),
        has_people=bool(await UserStore(gateway.database).list()),  # the name field then takes the focus
    )


@get("/login")
async def login_form(
    request: Request[Any, Any, Any],
    web: NamedDependency[WebState],
    gateway: NamedDependency[Gateway],
    session: NamedDependency[Session | None],
    next_path: Annotated[str | None, QueryParameter(name="next")] = None,
) -> Response[Any]:
    """The login page (people who are logged in go straight on)."""
    if session is not None and session.member:
        return redirect(request, safe_next(next_path))
    return await _login_page(request, web, gateway, safe_next(next_path))


async def _admin_secret(gateway: Gateway, web: WebState, secret: str) -> tuple[bool, int | None]:
    """``(ok, key id)`` for a password, an admin API key or the bootstrap key."""
    password = web.settings.admin_password
    if password and hmac.compare_digest(secret.encode("utf-8", "replace"), password.encode()):
        return True, None
    try:
        key_id, admin = await gateway.identify("Bearer " + secret)
    except GatewayError:
        return False, None
    return admin, key_id


def _throttle_buckets(request: Request[Any, Any, Any]) -> list[str]:
    """The throttle counters a login attempt counts against: its address, and one shared by all forwarded ones."""
    address = request.client.host if request.client else "unknown"
    # uvicorn believes X-Forwarded-For from loopback and makes it the client address, so a client on this machine
    # could name a new address at every attempt. Every forwarded attempt also counts against one shared counter:
    # rotating the header buys no more guesses than not sending it.
    return [address, "forwarded"] if "x-forwarded-for" in request.headers else [address]


@post("/login", status_code=303)
async def login(
    request: Request[Any, Any, Any], web: NamedDependency[WebState], gateway: NamedDependency[Gateway]
) -> Response[Any]:
    """Check the name and password (or the admin password or key) and start a session."""
    form = await request.form()
    next_path = safe_next(str(form.get("next") or ""))
    cookie_token = request.cookies.get(_LOGIN_COOKIE, "")
    form_token = str(form.get("_login") or "")
    if (
        not same_site(request)
        or not cookie_token
        or not hmac.compare_digest(cookie_token.encode(), form_token.encode())
    ):
        return await _login_page(
            request, web, gateway, next_path, "The form expired or came from another site; try again."
        )
    buckets = _throttle_buckets(request)
    throttle = LoginThrottle(gateway.database)  # counted in the database: every worker and replica sees it
    if await throttle.blocked(buckets):
        return await _login_page(request, web, gateway, next_path, "Too many failed attempts; wait ten minutes.")
    secret = str(form.get("secret") or "")[:1024]
    name = str(form.get("name") or "").strip()[:100]
    user_id, admin, key_id = None, False, None
    if name:  # a person
        person = await UserStore(gateway.database).authenticate(name, secret) if secret else None
        ok = person is not None
        if person is not None:
            user_id, admin, name = person.id, person.admin, person.name
    else:
        ok, key_id = await _admin_secret(gateway, web, secret[:512]) if secret else (False, None)
        admin = ok
    if not ok:
        await throttle.failed(buckets)
        wrong = "Wrong name or password." if name else "Wrong password or key (or not an admin key)."
        return await _login_page(request, web, gateway, next_path, wrong)
    await throttle.succeeded(buckets[0])  # the shared counter is not reset: one admin's login would reset it for all
    old = request.cookies.get(COOKIE)
    store = sessions(gateway, web)
    await store.delete(old)  # a fresh session id at every login (no session fixation)
    token, _ = await store.create(admin=admin, key_id=key_id, user_id=user_id, name=name or None)
    return redirect(request, next_path, cookies=[_session_cookie(request, token, int(web.settings.session_ttl))])


@post("/logout", status_code=303)
async def logout(
    request: Request[Any, Any, Any],
    web: NamedDependency[WebState],
    gateway: NamedDependency[Gateway],
    session: NamedDependency[Session | None],
) -> Response[Any]:
    """End the session and forget the cookie."""
    if session is not None:
        await check_csrf(request, session)
        await sessions(gateway, web).delete(request.cookies.get(COOKIE))
    return redirect(request, "/login", cookies=[_session_cookie(request, "", 0)])


def login_handlers() -> list[Any]:
    """The login and logout routes."""
    return [login_form, login, logout]

"""Who may use which page: sessions from the cookie, admin, person and chat access, CSRF and origin checks.

Admins (a person with the admin flag, the admin password or an admin key) may use every page; a person (a
``users`` row) uses the chat, their own keys and their own usage; a guest only the chat, while it is public.

A state-changing request must come from this site: ``Sec-Fetch-Site`` and ``Origin`` when sent, and the
session's CSRF token in ``x-csrf-token`` (htmx) or the ``_csrf`` field.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import quote, urlsplit

from litestar import Request, Response
from litestar.di import NamedDependency
from litestar.types import ExceptionHandlersMap

from minigate.gateway.runtime.audit import ACTOR, Actor
from minigate.gateway.runtime.gateway import Gateway
from minigate.web.render import SECURITY_HEADERS, error_page, is_htmx, redirect
from minigate.web.sessions import COOKIE, Session, SessionStore
from minigate.web.state import WebState

__all__ = [
    "CsrfFailed",
    "LoginRequired",
    "auth_error_handlers",
    "check_csrf",
    "provide_admin",
    "provide_chat_user",
    "provide_member",
    "provide_session",
    "safe_next",
    "same_site",
]

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginRequired(Exception):
    """The page needs a (admin) session the request does not have."""


class CsrfFailed(Exception):
    """A state-changing request without this site's origin or without the session's CSRF token."""


def same_site(request: Request[Any, Any, Any]) -> bool:
    """False when the browser says the request comes from another site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        return origin != "null" and urlsplit(origin).netloc == host
    return True


async def check_csrf(request: Request[Any, Any, Any], session: Session) -> None:
    """Raise :class:`CsrfFailed` unless the request is same-site and carries the session's token."""
    if not same_site(request):
        raise CsrfFailed()
    token = request.headers.get("x-csrf-token")
    if token is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            token = (await request.form()).get("_csrf")
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise CsrfFailed()


def _act_as(request: Request[Any, Any, Any], session: Session) -> None:
    """Name the session's owner as the actor of this state-changing request, for the audit log."""
    if session.user_id is not None:
        actor = Actor(session.name or f"person {session.user_id}", "user", session.user_id, session.key_id)
    elif session.key_id is not None:
        actor = Actor(f"key {session.key_id}", "key", None, session.key_id)
    else:
        actor = Actor("admin", "admin")  # the admin password
    request.scope.setdefault("state", {})[ACTOR] = actor


def safe_next(target: str | None) -> str:
    """A local path to go back to after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/chat"
    return target


def sessions(gateway: Gateway, web: WebState) -> SessionStore:
    """The session store of this gateway."""
    return SessionStore(gateway.database, web.settings.session_ttl)


async def provide_session(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], web: NamedDependency[WebState]
) -> Session | None:
    """The session of the request's cookie, if it is live."""
    return await sessions(gateway, web).get(request.cookies.get(COOKIE))


async def provide_admin(request: Request[Any, Any, Any], session: NamedDependency[Session | None]) -> Session:
    """An admin session (CSRF-checked for state-changing methods); else :class:`LoginRequired`."""
    if session is None or not session.admin:
        raise LoginRequired()
    if request.method not in _SAFE_METHODS:
        await check_csrf(request, session)
        _act_as(request, session)
    return session


async def provide_member(request: Request[Any, Any, Any], session: NamedDependency[Session | None]) -> Session:
    """A logged-in session, an admin's or a person's (CSRF-checked for state-changing methods); guests and
    visitors get :class:`LoginRequired`. Pages that take it show an admin everything and a person their own."""
    if session is None or not session.member:
        raise LoginRequired()
    if request.method not in _SAFE_METHODS:
        await check_csrf(request, session)
        _act_as(request, session)
    return session


async def provide_chat_user(
    request: Request[Any, Any, Any], session: NamedDependency[Session | None], web: NamedDependency[WebState]
) -> Session:
    """A session allowed to chat: an admin, a person, or a guest while the chat is public."""
    if session is None or not (session.member or web.settings.chat_public):
        raise LoginRequired()
    if request.method not in _SAFE_METHODS:
        await check_csrf(request, session)
    return session


def auth_error_handlers(web: WebState) -> ExceptionHandlersMap:
    """Turn :class:`LoginRequired` into a trip to the login page and :class:`CsrfFailed` into a 403."""

    def login_required(request: Request[Any, Any, Any], _: LoginRequired) -> Response[Any]:
        target = "/login?next=" + quote(request.url.path, safe="/")
        if request.method in _SAFE_METHODS and not is_htmx(request):
            return redirect(request, target)
        headers = {"hx-redirect": target} if is_htmx(request) else {}
        body = b"Log in first: this needs a session."
        return Response(body, status_code=403, media_type="text/plain", headers={**SECURITY_HEADERS, **headers})

    def csrf_failed(_: Request[Any, Any, Any], __: CsrfFailed) -> Response[Any]:
        return error_page(web, 403, "This request did not come from this site's own form (CSRF check failed).")

    return {LoginRequired: login_required, CsrfFailed: csrf_failed}

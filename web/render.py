"""Turning templates into responses with the web UI's security headers, and its error pages."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException
from litestar.response import Redirect

from minigate.web.sessions import Session
from minigate.web.state import WebState

__all__ = ["SECURITY_HEADERS", "is_htmx", "page", "redirect"]

# No inline script or style anywhere, no remote anything: even markup that slipped past the sanitiser could
# neither run script nor load a remote image.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    """Whether htmx sent the request (it then wants a partial)."""
    return request.headers.get("hx-request") == "true"


def page(
    web: WebState,
    template: str,
    session: Session | None,
    *,
    status: int = 200,
    cookies: list[Cookie] | None = None,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response[str]:
    """Render ``template`` as an HTML response; every template sees ``session``, ``csrf`` and ``chat_public``."""
    html = web.render(
        template,
        session=session,
        csrf=session.csrf if session else "",
        chat_public=web.settings.chat_public,
        **context,
    )
    return Response(
        html,
        status_code=status,
        media_type="text/html; charset=utf-8",
        headers={**SECURITY_HEADERS, **(headers or {})},
        cookies=cookies,
    )


def redirect(request: Request[Any, Any, Any], path: str, cookies: list[Cookie] | None = None) -> Response[Any]:
    """Go to ``path``: a 303 for browsers, ``HX-Redirect`` for htmx (which would otherwise swap the page in)."""
    if is_htmx(request):
        return Response(b"", status_code=204, headers={"hx-redirect": path, **SECURITY_HEADERS}, cookies=cookies)
    return Redirect(path=path, status_code=303, headers=SECURITY_HEADERS, cookies=cookies)


def error_page(web: WebState, status: int, message: str) -> Response[str]:
    """A small HTML error page (also used as an htmx partial)."""
    return page(web, "error.html", None, status=status, status_code=status, message=message)


def http_error_handler(web: WebState) -> Any:
    """Litestar's own errors (404, 405, 413...) on web routes, as HTML rather than OpenAI JSON."""

    def handle(_: Request[Any, Any, Any], exc: HTTPException) -> Response[str]:
        status = exc.status_code
        message = {404: "There is no such page.", 405: "That method is not allowed here."}.get(status)
        return error_page(web, status, message or (str(exc.detail) if status < 500 else "Something went wrong."))

    return handle

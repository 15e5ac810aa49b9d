"""The web UI: chat, model management, usage and keys pages (server-rendered Jinja with vendored htmx).

:func:`web_routes` gives the app factory every route; docs/architecture.md, "Web UI", lists each URL.
"""

from __future__ import annotations

from typing import Any

from litestar import Response, Router, get
from litestar.di import Provide
from litestar.exceptions import HTTPException

from minigate.gateway.runtime.audit import audited
from minigate.web.api_docs import api_docs_handlers
from minigate.web.assets import gzip_html
from minigate.web.audit import audit_handlers
from minigate.web.auth import auth_error_handlers, provide_admin, provide_chat_user, provide_member, provide_session
from minigate.web.chains import apply_stored_overrides
from minigate.web.chat import chat_handlers
from minigate.web.chat_branch import branch_handlers
from minigate.web.chat_export import export_handlers
from minigate.web.chat_images import image_handlers
from minigate.web.chat_send import send_handlers
from minigate.web.keys import key_handlers
from minigate.web.login import login_handlers
from minigate.web.models import model_handlers
from minigate.web.render import http_error_handler
from minigate.web.state import WebSettings, WebState
from minigate.web.usage import usage_handlers
from minigate.web.users import user_handlers

__all__ = ["WebSettings", "WebState", "apply_stored_overrides", "web_routes"]

_FAVICON = "favicon-1.ico"  # vendored, versioned in its name like the other static files


def web_routes(state: WebState | None = None) -> list[Any]:
    """Every route handler of the web UI, for the app factory (``minigate.gateway.app.create_app``).

    ``state`` defaults to a new :class:`WebState` with settings from the environment
    (``MINIGATE_ADMIN_PASSWORD``, ``MINIGATE_CHAT_PUBLIC``). Pass the same state to
    :func:`apply_stored_overrides` right after the gateway opens, so edited chains are in force from the
    first request after a restart.
    """
    web = state or WebState.create()

    def provide_web() -> WebState:
        return web

    public = Router(
        "/",
        route_handlers=[
            *login_handlers(),
            *chat_handlers(),
            *send_handlers(),
            *branch_handlers(),
            *image_handlers(),
            *export_handlers(),
            *api_docs_handlers(),
        ],
        dependencies={
            "web": Provide(provide_web, sync_to_thread=False),
            "session": Provide(provide_session),
            "chat_user": Provide(provide_chat_user),
        },
        exception_handlers={**auth_error_handlers(web), HTTPException: http_error_handler(web)},
        middleware=[gzip_html],  # complete HTML pages only: SSE streams pass through as they come
        include_in_schema=False,
    )
    admin = Router(
        "/",
        route_handlers=[*model_handlers(), *usage_handlers(), *key_handlers(), *user_handlers(), *audit_handlers()],
        dependencies={
            "web": Provide(provide_web, sync_to_thread=False),
            "session": Provide(provide_session),
            "admin": Provide(provide_admin),
            "member": Provide(provide_member),  # a person's own keys and usage; an admin's everyone's
        },
        exception_handlers={**auth_error_handlers(web), HTTPException: http_error_handler(web)},
        # gzip: complete HTML pages only, SSE streams pass through as they come; every state-changing request here
        # (people, keys, models, chains) is an admin action, or a person's own key change: recorded.
        middleware=[audited("web"), gzip_html],
        include_in_schema=False,
    )
    static = web.assets.handler()  # from memory, gzipped once; hashed addresses are cached for a year
    icon = web.assets.files[_FAVICON].body

    @get("/favicon.ico", include_in_schema=False, sync_to_thread=False)
    def favicon() -> Response[bytes]:
        """The site icon, where browsers look for it."""
        cache = "public, max-age=604800"  # a week: its address has no version to change when the icon does
        return Response(icon, media_type="image/x-icon", headers={"cache-control": cache})

    return [public, admin, static, favicon]

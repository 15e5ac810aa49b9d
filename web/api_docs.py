"""The API docs page: ``/admin/api/docs``, Swagger UI (vendored in web/static) over ``/schema/openapi.json``.

Open to anyone, like the document it draws: it lists what exists, never data; every admin operation it can try
still needs an admin key, typed into its Authorize dialog (docs/architecture.md, "Admin API").
"""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency

from minigate.web.render import page
from minigate.web.state import WebState

__all__ = ["SWAGGER_UI", "api_docs_handlers"]

SWAGGER_UI = ("swagger-ui-bundle-5.36.0.js", "swagger-ui-5.36.0.css")  # vendored: web/static/swagger-ui-*.README.md
_SCHEMA = "/schema/openapi.json"


@get("/admin/api/docs")
async def api_docs(web: NamedDependency[WebState]) -> Response[str]:
    """Swagger UI over the gateway's OpenAPI document."""
    bundle, css = SWAGGER_UI
    return page(web, "api_docs.html", None, bundle=bundle, css=css, schema_url=_SCHEMA)


def api_docs_handlers() -> list[Any]:
    """The API docs page route."""
    return [api_docs]

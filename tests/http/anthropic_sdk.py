"""Anthropic's official SDK pointed at an in-process gateway.

The SDK speaks through ``httpx2`` and refuses ``httpx`` objects, so :class:`Bridge` is an ``httpx2`` transport
that hands each request to the in-process ``httpx.Client`` (:meth:`tests.inprocess.InProcessGateway.new_http`).
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import httpx2

from tests.gateway_server import ADMIN_KEY
from tests.inprocess import BASE, InProcessGateway

__all__ = ["Bridge", "anthropic_client"]

_HOP = frozenset({"content-encoding", "content-length", "transfer-encoding"})  # the body is handed over decoded


class Bridge(httpx2.BaseTransport):
    """An ``httpx2`` transport over an ``httpx.Client`` (the whole answer is read before it is handed back)."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        answer = self.http.request(
            request.method, str(request.url), headers=list(request.headers.multi_items()), content=request.read()
        )
        headers = [(name, value) for name, value in answer.headers.multi_items() if name.lower() not in _HOP]
        return httpx2.Response(answer.status_code, headers=headers, content=answer.content, request=request)

    def close(self) -> None:
        """Close the in-process client too."""
        self.http.close()


def anthropic_client(gateway: InProcessGateway, key: str | None = ADMIN_KEY, **kwargs: Any) -> anthropic.Anthropic:
    """The SDK as agents configure it: base URL without /v1 (it appends /v1/messages), the key as ``x-api-key``,
    no retries (the gateway does the retrying). Use it in a ``with`` block: closing it closes its clients."""
    kwargs.setdefault("max_retries", 0)
    http = httpx2.Client(transport=Bridge(gateway.new_http()), base_url=BASE, timeout=10)
    return anthropic.Anthropic(base_url=BASE, api_key=key, http_client=http, **kwargs)

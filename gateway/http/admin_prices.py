"""The admin HTTP API for prices: ``GET /admin/api/prices``, the table in force and where each price comes from.

Read only: prices are configuration (``models.prices``), changed by editing the config file and reloading it
(``POST /admin/reload``, or the file watch), like every other setting; docs/architecture.md says why.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency

from minigate.gateway.config.prices import PriceSource, shipped_prices
from minigate.gateway.http.admin_json import json_response, require_admin
from minigate.gateway.runtime.gateway import Gateway

__all__ = ["EffectivePrice", "Price", "PriceList", "admin_price_handlers"]


class Price(msgspec.Struct):
    """US dollars per million tokens."""

    input: float
    output: float


class EffectivePrice(msgspec.Struct, kw_only=True):
    """The price of one model the gateway routes, and where it comes from: ``config`` (``entry``: the
    ``models.prices`` key that matched), ``shipped`` (``entry``: the shipped pattern), ``local`` (a local model the
    config does not price: free) or ``none`` (nothing prices it: its usage rows have no cost)."""

    model: str  # provider/model
    input: float | None
    output: float | None
    source: PriceSource
    entry: str | None = None


class PriceList(msgspec.Struct, kw_only=True):
    """``GET /admin/api/prices``: the prices of every routed model, then both tables they come from."""

    effective: list[EffectivePrice]
    configured: dict[str, Price]
    shipped: dict[str, Price]
    shipped_taken: str
    free_local_providers: list[str]


@get("/prices")
async def list_prices(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """The price of every model the gateway routes and where it comes from, then the configured prices and the
    shipped ones (US dollars per million input and output tokens). Read only: prices live in the config file
    (``models.prices``); edit it and reload."""
    await require_admin(request, gateway)
    table = gateway.config.prices
    effective = []
    for ref, kind, _ in gateway.routes.listing():
        if kind != "model":
            continue
        provider, _, model = ref.partition("/")
        price, source, entry = table.explain(provider, model)
        given = (None, None) if price is None else price
        effective.append(EffectivePrice(model=ref, input=given[0], output=given[1], source=source, entry=entry))
    taken, shipped = shipped_prices()
    return json_response(
        PriceList(
            effective=effective,
            configured={k: Price(i, o) for k, (i, o) in table.configured.items()},
            shipped={k: Price(i, o) for k, (i, o) in shipped.items()},
            shipped_taken=taken,
            free_local_providers=sorted(table.local),
        )
    )


def admin_price_handlers() -> list[Any]:
    """The price handlers (mounted under ``/admin/api`` with the others)."""
    return [list_prices]

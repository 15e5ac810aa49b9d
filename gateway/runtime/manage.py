"""Local model management as a service: load, unload, reload or delete one model. The admin API and the web UI
both call it, so neither imports the other."""

from __future__ import annotations

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.runtime.gateway import Gateway
from minigate.providers.base import ManagesModels, ProviderError

__all__ = ["manage_model", "managed"]


def managed(gateway: Gateway, provider: str) -> ManagesModels:
    """The provider named ``provider`` if it manages local models; 404 or 400 otherwise."""
    found = gateway.providers.get(provider)
    if found is None:
        raise GatewayError(f"No provider named {provider!r}.", status=404, code="provider_not_found")
    if not isinstance(found, ManagesModels):
        raise GatewayError(f"Provider {provider!r} has no local models to manage.", status=400, code="not_manageable")
    return found


async def manage_model(gateway: Gateway, provider: str, model: str, action: str) -> None:
    """Load, unload, reload (hot-swap) or delete one local model; a provider's failure as a GatewayError."""
    if provider in gateway.providers and model not in gateway.providers[provider].models():
        raise GatewayError(f"{provider}/{model} does not exist.", status=404, code="model_not_found")
    target = managed(gateway, provider)
    try:
        if action == "load":
            await target.load(model)
        elif action == "unload":
            await target.unload(model)
        elif action == "reload":
            await target.reload(model)
        elif action == "delete":
            await target.remove(model)
            gateway.refresh_routes()
        else:
            raise GatewayError(f"Unknown action {action!r}: use load, unload, reload or delete.", status=404)
    except ProviderError as err:
        raise GatewayError(
            err.message, status=err.status if err.status >= 400 else 500, type=err.type, code=err.code
        ) from None

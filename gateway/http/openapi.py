"""The OpenAPI document of ``/v1``, ``/admin/api`` and the probes, at ``/schema/openapi.json`` (no key needed).

Litestar generates it from the route handlers; :func:`complete` adds what they read and write themselves
(request bodies, answers, errors) from the wire structs in :data:`_OPERATIONS`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin

from minigate.gateway.core.wire import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ModelCard, ModelList
from minigate.gateway.http.admin import ImportRequest, PullRequest
from minigate.gateway.http.admin_keys import KeyCreate, KeyList, KeyUpdate, KeyView, Revoked
from minigate.gateway.http.admin_prices import PriceList
from minigate.gateway.http.admin_usage import UsagePage, UsageSummary
from minigate.gateway.http.admin_users import UserCreate, UserList, UserUpdate, UserView
from minigate.gateway.http.audit import AuditPage
from minigate.gateway.protocols.anthropic import CountTokensRequest, MessagesRequest
from minigate.gateway.protocols.anthropic_out import MessageObject, TokenCount
from minigate.gateway.protocols.responses import ResponsesRequest
from minigate.gateway.protocols.responses_out import DeletedResponse, InputItemList, ResponseObject

__all__ = ["complete", "openapi_config"]

_REF = "#/components/schemas/{name}"


class ErrorDetail(msgspec.Struct, kw_only=True):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error answer: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


class AnthropicErrorDetail(msgspec.Struct, kw_only=True):
    """Anthropic's error object."""

    type: str
    message: str


class AnthropicErrorBody(msgspec.Struct, kw_only=True):
    """Every error answer under ``/v1/messages``: ``{"type": "error", "error": {"type", "message"}}``."""

    type: str
    error: AnthropicErrorDetail


class ChatCompletion(msgspec.Struct, kw_only=True):
    """An upstream's answer, passed through; ``model`` names the deployment that answered (provider/model)."""

    model: str
    object: str = "chat.completion"
    choices: list[dict[str, Any]] = []
    usage: dict[str, Any] | None = None


class Completion(msgspec.Struct, kw_only=True):
    """An upstream's text completion, passed through; ``model`` names the deployment that answered."""

    model: str
    object: str = "text_completion"
    choices: list[dict[str, Any]] = []
    usage: dict[str, Any] | None = None


class Embeddings(msgspec.Struct, kw_only=True):
    """An upstream's embeddings, passed through; ``model`` names the deployment that answered."""

    model: str
    object: str = "list"
    data: list[dict[str, Any]] = []
    usage: dict[str, Any] | None = None


class ProviderView(msgspec.Struct, kw_only=True):
    """One provider of ``GET /admin/api/models``, with its models' states and its deployments' health."""

    name: str
    type: str
    manageable: bool
    models: list[dict[str, Any]]
    health: dict[str, Any]


class ProviderList(msgspec.Struct, kw_only=True):
    """``GET /admin/api/models``."""

    providers: list[ProviderView]


class Job(msgspec.Struct, kw_only=True):
    """A pull or import job and its last progress lines."""

    id: int
    kind: str
    target: str
    state: str
    started: float
    finished: float | None
    error: str | None
    status: int | None
    progress: list[str]


class JobStarted(msgspec.Struct, kw_only=True):
    """202: the job that was started."""

    job: Job


class JobList(msgspec.Struct, kw_only=True):
    """``GET /admin/api/jobs``, newest first."""

    jobs: list[Job]


class Liveness(msgspec.Struct, kw_only=True):
    """``GET /health``."""

    status: str


class Reloaded(msgspec.Struct, kw_only=True):
    """``POST /admin/reload`` when the new config was taken (see
    ``minigate.gateway.runtime.reload.ReloadResult.view``)."""

    status: str
    source: str
    providers: dict[str, list[str]]
    restart_required: list[str]


class Readiness(msgspec.Struct, kw_only=True):
    """``GET /ready``: 200 or 503 with the failing check, and then the ``reason`` in words."""

    status: str
    checks: dict[str, bool]
    reason: str | None = None


_DESCRIPTIONS = {
    400: "The request is malformed or a field is wrong (``param`` names it).",
    401: "No API key, or not a valid one.",
    403: "The key may not use the admin API.",
    404: "No such model, provider, job, key, person or path.",
    409: "There is already a person of that name.",
    408: "The request body did not arrive within ``server.body_timeout``.",
    413: "The request body is larger than ``server.max_body_bytes``.",
    429: "Every deployment is rate-limited upstream (``Retry-After`` says when to try again).",
    500: "An internal error; it is logged, never shown.",
    502: "No deployment of the chain could answer.",
    503: "Every deployment is cooling down, or the gateway is shutting down.",
    504: "The request's deadline passed.",
    "4XX": "An upstream refused the request itself; its status and message are passed through.",
}


@dataclass(frozen=True)
class _Operation:
    """What the handlers of one operation read and answer, beyond what Litestar sees in their signature."""

    ok: type[Any] | None
    errors: tuple[int | str, ...]
    body: type[Any] | None = None
    status: int = 200
    stream: bool = False  # also answers text/event-stream (``stream: true``)
    media_type: str = "application/json"
    params: dict[str, dict[str, Any]] | None = None  # path parameter schemas narrower than the signature's str
    error: type[Any] = ErrorBody  # the shape of its error answers


_V1 = (401, 500, 503)
_BODY = (400, 408, 413)
_ROUTED = (*_V1, *_BODY, 404, 429, 502, 504, "4XX")
_ADMIN = (401, 403, 500)
_MODEL = (*_ADMIN, 400, 404, "4XX")  # a provider's own refusal (memory budget, a broken folder) keeps its status
_JOB = (*_ADMIN, *_BODY, 404)
_OPERATIONS = {
    ("post", "/v1/chat/completions"): _Operation(ChatCompletion, _ROUTED, ChatCompletionRequest, stream=True),
    ("post", "/v1/completions"): _Operation(Completion, _ROUTED, CompletionRequest, stream=True),
    ("post", "/v1/embeddings"): _Operation(Embeddings, _ROUTED, EmbeddingRequest),
    ("get", "/v1/models"): _Operation(ModelList, (*_V1, 400, 404)),  # 400: an id that is no model name
    ("get", "/v1/models/{model_id}"): _Operation(ModelCard, (*_V1, 400, 404)),
    ("post", "/v1/responses"): _Operation(ResponseObject, _ROUTED, ResponsesRequest, stream=True),
    ("get", "/v1/responses/{response_id}"): _Operation(ResponseObject, (*_V1, 404)),
    ("delete", "/v1/responses/{response_id}"): _Operation(DeletedResponse, (*_V1, 404)),
    ("get", "/v1/responses/{response_id}/input_items"): _Operation(InputItemList, (*_V1, 400, 404)),
    ("post", "/v1/messages"): _Operation(
        MessageObject, _ROUTED, MessagesRequest, stream=True, error=AnthropicErrorBody
    ),
    ("post", "/v1/messages/count_tokens"): _Operation(
        TokenCount, (*_V1, *_BODY, 404), CountTokensRequest, error=AnthropicErrorBody
    ),
    ("get", "/admin/api/models"): _Operation(ProviderList, _ADMIN),
    ("post", "/admin/api/models/{provider}/{model}/{action}"): _Operation(
        ProviderView, _MODEL, params={"action": {"type": "string", "enum": ["load", "unload", "reload"]}}
    ),
    ("delete", "/admin/api/models/{provider}/{model}"): _Operation(ProviderView, _MODEL),
    ("post", "/admin/api/models/{provider}/pull"): _Operation(JobStarted, _JOB, PullRequest, 202),
    ("post", "/admin/api/models/{provider}/import"): _Operation(JobStarted, _JOB, ImportRequest, 202),
    ("get", "/admin/api/jobs"): _Operation(JobList, _ADMIN),
    ("post", "/admin/reload"): _Operation(Reloaded, (*_ADMIN, 400)),  # 400: the new config, refused
    ("get", "/admin/api/jobs/{job_id}"): _Operation(Job, (*_ADMIN, 404)),
    ("get", "/admin/api/keys"): _Operation(KeyList, _ADMIN),
    ("post", "/admin/api/keys"): _Operation(KeyView, (*_ADMIN, *_BODY), KeyCreate, 201),
    ("patch", "/admin/api/keys/{key_id}"): _Operation(KeyView, (*_ADMIN, *_BODY, 404), KeyUpdate),
    ("delete", "/admin/api/keys/{key_id}"): _Operation(Revoked, (*_ADMIN, 404)),
    ("get", "/admin/api/users"): _Operation(UserList, _ADMIN),
    ("post", "/admin/api/users"): _Operation(UserView, (*_ADMIN, *_BODY, 409), UserCreate, 201),
    ("get", "/admin/api/users/{user_id}"): _Operation(UserView, (*_ADMIN, 404)),
    ("patch", "/admin/api/users/{user_id}"): _Operation(UserView, (*_ADMIN, *_BODY, 404), UserUpdate),
    ("delete", "/admin/api/users/{user_id}"): _Operation(UserView, (*_ADMIN, 400, 404)),  # 400: one's own person
    ("get", "/admin/api/usage"): _Operation(UsagePage, (*_ADMIN, 400)),  # 400: a filter out of its range
    ("get", "/admin/api/usage/summary"): _Operation(UsageSummary, (*_ADMIN, 400)),
    ("get", "/admin/api/prices"): _Operation(PriceList, _ADMIN),
    ("get", "/admin/api/audit"): _Operation(AuditPage, (*_ADMIN, 400)),  # 400: a limit or before that is no integer
    ("get", "/health"): _Operation(Liveness, ()),
    ("get", "/ready"): _Operation(Readiness, (500,)),
    ("get", "/metrics"): _Operation(None, (500,), media_type="text/plain"),
}


# One server-sent event (OpenAPI before 3.2 describes the events of a stream, not the stream): ``data`` is a chunk
# as JSON, an error object, or ``[DONE]``.
_EVENT = {
    "type": "object",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
    "required": ["data"],
}


def _components() -> dict[str, Any]:
    structs = {t for op in _OPERATIONS.values() for t in (op.ok, op.body) if t is not None}
    _, components = msgspec.json.schema_components(
        sorted([*structs, ErrorBody, AnthropicErrorBody], key=lambda t: t.__name__), ref_template=_REF
    )
    return components


def _ref(struct: type[Any]) -> dict[str, str]:
    return {"$ref": _REF.format(name=struct.__name__)}


def _responses(op: _Operation) -> dict[str, Any]:
    if op.ok is None:
        content: dict[str, Any] = {op.media_type: {"schema": {"type": "string"}}}
    else:
        content = {op.media_type: {"schema": _ref(op.ok)}}
    if op.stream:
        content["text/event-stream"] = {"schema": _EVENT}
    responses: dict[str, Any] = {str(op.status): {"description": "Success.", "content": content}}
    if op.ok is Readiness:
        responses["503"] = {"description": "Not ready: the failing check is false.", "content": content}
    for status in op.errors:
        error = {"application/json": {"schema": _ref(op.error)}}
        responses.setdefault(str(status), {"description": _DESCRIPTIONS[status], "content": error})
    return responses


def _tag(path: str) -> str:
    """The group an operation is listed under on the docs page."""
    if path.startswith("/admin/api/"):
        return path.split("/")[3]  # models, jobs, keys, users, usage, prices
    return "v1" if path.startswith("/v1/") else "admin" if path.startswith("/admin/") else "probes"


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Litestar's generated ``document`` with request bodies, answers and error responses added (a copy)."""
    document = copy.deepcopy(document)
    document.setdefault("components", {}).setdefault("schemas", {}).update(_components())
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            op = _OPERATIONS.get((method, path))
            if op is None:
                continue
            operation["responses"] = _responses(op)
            for param in operation.get("parameters", ()):
                if op.params and param.get("name") in op.params:
                    param["schema"] = op.params[param["name"]]
            if op.body is not None:
                body = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
                if op.body is PullRequest:
                    body["required"] = False  # an empty body pulls the default model
                operation["requestBody"] = body
            if path.startswith(("/v1/", "/admin/")):
                operation["security"] = [{"bearer": []}]
            operation["tags"] = [_tag(path)]
    document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document


class _CompletedJson(JsonRenderPlugin):
    """Litestar's JSON rendering of the document, completed once by :func:`complete`."""

    def __init__(self) -> None:
        super().__init__()
        self._rendered: bytes | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._rendered is None:
            self._rendered = self.render_json(request, complete(openapi_schema))
        return self._rendered


def openapi_config(version: str) -> OpenAPIConfig:
    """The app's OpenAPI config: JSON only (no documentation site that would load scripts from elsewhere)."""
    return OpenAPIConfig(
        title="minigate",
        version=version,
        description=(
            "An OpenAI-compatible gateway: /v1 as OpenAI defines it; /admin/api for local models, keys, people, "
            "usage and prices (an admin key: MINIGATE_ADMIN_KEY or a key made with admin)."
        ),
        path="/schema",
        render_plugins=[_CompletedJson()],
        use_handler_docstrings=True,
        create_examples=False,
    )

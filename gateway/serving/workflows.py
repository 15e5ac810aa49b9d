"""Workflows as routes: each trigger of a configured workflow is a route that runs the workflow's steps.

Answers JSON or a stream of workflow events (the README's Workflows section); every ``llm_inference`` step is one
call through the router, with its chain, plugins' hooks and a usage row under the workflow request's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import msgspec
from jinja2 import Template, TemplateError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from litestar import Request, Response, route
from litestar.di import NamedDependency
from litestar.response import Stream

from minigate.gateway.config.schema import Config
from minigate.gateway.config.workflow_steps import LLMInference, Workflow, sandbox
from minigate.gateway.core.errors import GatewayError, InvalidRequest, error_body
from minigate.gateway.core.sse import DONE, MEDIA_TYPE, SSE_HEADERS, frame
from minigate.gateway.core.tokens import token_counts
from minigate.gateway.core.wire import ChatCompletionRequest, decode_json
from minigate.gateway.core.writes import close_at_end
from minigate.gateway.ops.observe import Trace, trace_of
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.serving.events import Chunk, Event, Outcome, Usage
from minigate.gateway.serving.proxy import serve_json, start_call
from minigate.gateway.serving.streaming import serve_stream
from minigate.web.markdown import MarkdownRenderer

__all__ = ["Run", "workflow_routes"]

log = logging.getLogger("minigate")

_UNDEFINED = re.compile(r"'([^']+)' is undefined")
_encode = msgspec.json.encode


@dataclass(slots=True)
class _Tools:
    """Per app: the sandboxed template environment with the templates it compiled, and the Markdown renderer."""

    env: ImmutableSandboxedEnvironment = field(default_factory=sandbox)
    markdown: MarkdownRenderer = field(default_factory=MarkdownRenderer)
    compiled: dict[str, Template] = field(default_factory=dict)

    def template(self, source: str) -> Template:
        found = self.compiled.get(source)
        if found is None:
            if len(self.compiled) >= 256:  # reloads may bring new templates: keep the cache bounded
                self.compiled.clear()
            found = self.compiled[source] = self.env.from_string(source)
        return found


class Run:
    """One run of one workflow; its steps use it as their ``StepContext`` (see
    ``minigate.gateway.config.workflow_steps``)."""

    def __init__(
        self,
        gateway: Gateway,
        tools: _Tools,
        workflow: Workflow,
        variables: dict[str, Any],
        key_id: int | None,
        trace: Trace | None,
    ) -> None:
        self.gateway, self.tools, self.workflow = gateway, tools, workflow
        self.variables, self.key_id, self.trace = variables, key_id, trace
        self.index = 0
        self.outputs: list[str] = []
        self.steps: list[dict[str, Any]] = []
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.emit: Callable[[bytes], Awaitable[None]] | None = None  # set when the answer streams

    def render(self, template: str) -> str:
        """Render a config template; the input and earlier outputs are data to it, never template code."""
        data = {**self.variables, "previous": self.outputs[-1] if self.outputs else "", "outputs": list(self.outputs)}
        try:
            return self.tools.template(template).render(data)
        except UndefinedError as err:
            m = _UNDEFINED.search(str(err))
            name = m.group(1) if m else None
            message = f"The workflow's input has no field {name!r} (step {self.index} uses it)."
            raise InvalidRequest(
                message if name else f"Step {self.index}: {err}.", param=name, code="missing_input"
            ) from None
        except (SecurityError, TemplateError) as err:
            log.error("workflow %s, step %s: template failed: %s", self.workflow.name, self.index, err)
            message = f"The template of step {self.index} failed: {type(err).__name__}."
            raise GatewayError(message, status=500, type="server_error", code="workflow_template_error") from None

    def markdown(self, text: str) -> str:
        """Sanitised HTML for Markdown ``text``."""
        return str(self.tools.markdown.render(text))

    async def infer(self, step: LLMInference, prompt: str) -> str:
        """One chat completion through the router; deltas are emitted as they arrive when streaming."""
        messages = [{"role": "system", "content": step.system}] if step.system else []
        raw: dict[str, Any] = {"model": step.model, "messages": [*messages, {"role": "user", "content": prompt}]}
        if step.max_tokens is not None:
            raw["max_tokens"] = step.max_tokens
        if step.temperature is not None:
            raw["temperature"] = step.temperature
        if self.emit is not None:
            raw.update(stream=True, stream_options={"include_usage": True})
        parsed = msgspec.convert(raw, ChatCompletionRequest)
        call = start_call(self.gateway, "chat/completions", parsed, raw, self.key_id, self.trace)
        if self.emit is None:
            reply = await serve_json(call)
            text, usage, outcome = _content(reply.body), reply.body.get("usage"), reply.outcome
        else:
            served = await serve_stream(call)
            text, usage = await self._relay(served.events)
            outcome = served.outcome
        counts, _ = token_counts(usage)  # checked already on the way out of the proxy; a plugin may change it
        for key, value in counts.items():
            if isinstance(value, int):
                self.usage[key] += value
        self.steps[-1].update(model=outcome.deployment.ref, fallbacks=outcome.fallbacks)
        return text

    async def _relay(self, events: AsyncGenerator[Event, None]) -> tuple[str, Any]:
        assert self.emit is not None
        parts: list[str] = []
        usage: Any = None
        try:
            async for event in events:
                if isinstance(event, Chunk):
                    for piece in event.pieces():
                        parts.append(piece)
                        await self.emit(frame({"object": "workflow.delta", "step": self.index, "delta": piece}))
                elif isinstance(event, Usage):
                    usage = event.counts
                elif isinstance(event, Outcome) and (failure := event.failure) is not None:
                    raise GatewayError(failure.message, status=502, type=failure.type, code=failure.code)
        finally:
            with anyio.CancelScope(shield=True):
                await events.aclose()  # ends the upstream call and stores its row, also when cancelled
        return "".join(parts), usage

    async def execute(self) -> dict[str, Any]:
        """Run every step in order; the result object. A step type that raises fails the run with a 500."""
        text = ""
        for index, step in enumerate(self.workflow.steps):
            self.index, kind = index, step.type or step.name
            self.steps.append({"type": kind})
            if self.emit is not None:
                await self.emit(frame({"object": "workflow.step", "step": index, "type": kind}))
            try:
                text = await step.run(self, text)
            except (GatewayError, asyncio.CancelledError):
                raise
            except Exception as err:
                log.exception("workflow %s: step %s (%s) failed", self.workflow.name, index, kind)
                message = f"Step {index} ({kind}) of workflow {self.workflow.name!r} failed: {type(err).__name__}."
                raise GatewayError(message, status=500, type="server_error", code="workflow_step_failed") from None
            if not isinstance(text, str):
                message = f"Step {index} ({kind}) returned {type(text).__name__}, not text."
                raise GatewayError(message, status=500, type="server_error", code="workflow_step_failed")
            self.outputs.append(text)
        request_id = self.trace.request_id if self.trace is not None else None
        return {
            "object": "workflow.result",
            "workflow": self.workflow.name,
            "output": text,
            "steps": self.steps,
            "usage": self.usage,
            "request_id": request_id,
        }


def _content(body: dict[str, Any]) -> str:
    choices = body.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


async def _sse(run: Run) -> AsyncGenerator[bytes, None]:
    """The streamed answer: the steps run in a task that feeds a small queue (a slow reader slows the steps)."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(64)
    run.emit = queue.put

    async def produce() -> None:
        try:
            await queue.put(frame(await run.execute()))
            await queue.put(DONE)
        except GatewayError as err:
            await queue.put(frame(err.body()))
        except Exception:
            log.exception("workflow %s failed", run.workflow.name)
            await queue.put(
                frame(error_body("The workflow hit an internal error; it has been logged.", "server_error"))
            )
        finally:
            await queue.put(None)

    producer = asyncio.ensure_future(produce())
    try:
        # Ends with the producer's None; each of its steps is bounded by the router's deadline.
        while (item := await queue.get()) is not None:
            yield item
    finally:
        producer.cancel()
        with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
            await producer  # its calls store their usage rows (499) on the way out


async def _unless_client_leaves(request: Request[Any, Any, Any], work: Coroutine[Any, Any, Any]) -> Any:
    """Await ``work``; if the client hangs up first, cancel it (its upstream calls with it) and return None.

    (``minigate.gateway.http.api`` has a tuned variant for /v1's millisecond answers; a workflow runs for seconds.)
    """
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


async def _variables(request: Request[Any, Any, Any]) -> dict[str, Any]:
    if request.method == "GET":
        return dict(request.query_params)
    body = await request.body()
    if not body.strip():
        return {}
    value = decode_json(body)  # a 400 for anything that is not JSON, never a server error
    if not isinstance(value, dict):
        raise InvalidRequest("The body must be a JSON object: its fields are the workflow's input.")
    return value


def _wants_stream(request: Request[Any, Any, Any], variables: dict[str, Any]) -> bool:
    stream = variables.pop("stream", False)
    if isinstance(stream, str):  # a GET's query parameter
        stream = {"true": True, "1": True, "false": False, "0": False, "": False}.get(stream.lower(), stream)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false.", param="stream", code="invalid_value")
    return stream or "text/event-stream" in request.headers.get("accept", "")


def _handler(name: str, path: str, method: Literal["GET", "POST", "PUT"], index: int, tools: _Tools) -> Any:
    async def run_workflow(request: Request[Any, Any, Any], gateway: NamedDependency[Gateway]) -> Response[Any]:
        """Run the workflow with the request's input; JSON, or SSE when asked to stream."""
        key_id = await gateway.authenticate(request.headers.get("authorization"))
        workflow = next((w for w in gateway.config.workflows if w.name == name), None)
        if workflow is None:
            raise GatewayError(f"The workflow {name!r} is not configured any more.", status=404, code="not_found")
        variables = await _variables(request)
        run = Run(gateway, tools, workflow, variables, key_id, trace_of(request.scope))
        if _wants_stream(request, variables):
            stream = _sse(run)
            close_at_end(request.scope, stream)  # a failed write leaves it suspended: its steps end with it
            return Stream(stream, media_type=MEDIA_TYPE, headers=SSE_HEADERS)
        result = await _unless_client_leaves(request, run.execute())
        if result is None:
            return Response(b"", status_code=499)
        return Response(_encode(result), media_type="application/json")

    handler = route(path, http_method=[method], status_code=200, name=f"workflow:{name}:{index}")
    return handler(run_workflow)


def workflow_routes(config: Config) -> list[Any]:
    """A route handler for each trigger of each workflow in ``config``, for the app factory."""
    tools = _Tools()
    return [
        _handler(workflow.name, trigger.path, trigger.method, i, tools)
        for workflow in config.workflows
        for i, trigger in enumerate(workflow.triggers)
    ]

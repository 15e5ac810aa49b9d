"""Workflow step types, and the ``workflows`` config section checked against them.

A step type is a msgspec struct (its fields are the step's options) with ``check`` and ``run``; plugins add their
own with ``api.steps.register``. Templates come from the config only; input is data, never compiled.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import msgspec
from jinja2 import StrictUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "LLMInference",
    "MarkdownRender",
    "PromptTemplate",
    "Step",
    "StepContext",
    "StepRegistry",
    "Trigger",
    "Workflow",
    "check_workflows",
    "model_checker",
    "sandbox",
]

Issue = tuple[str, str]


def sandbox() -> ImmutableSandboxedEnvironment:
    """The Jinja environment of workflow templates: sandboxed, strict about missing variables, no escaping
    (the output is a prompt, not HTML; ``markdown_render`` sanitises what becomes HTML)."""
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class StepContext(Protocol):
    """What a running step may use; ``minigate.gateway.serving.workflows.Run`` is the implementation."""

    index: int  # this step's position in the workflow

    def render(self, template: str) -> str:
        """Render a config template with the input fields, ``previous`` and ``outputs`` as data."""
        ...

    async def infer(self, step: LLMInference, prompt: str) -> str:
        """Send ``prompt`` through the router to ``step.model`` (usage row, fallbacks, streamed deltas)."""
        ...

    def markdown(self, text: str) -> str:
        """Sanitised HTML for Markdown ``text``."""
        ...


class Step(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every step type: subclass it, name it, declare options as fields, implement ``run``."""

    name: ClassVar[str] = ""
    type: str = ""  # the step type, as written in config

    def check(self, model_problem: Callable[[str], str | None]) -> Iterable[Issue]:
        """``(option, problem)`` for what the field types cannot say; ``model_problem`` checks a model name."""
        return ()

    async def run(self, context: StepContext, text: str) -> str:
        """The step's output for ``text``, the output of the step before (empty for the first step)."""
        raise NotImplementedError


class PromptTemplate(Step, kw_only=True):
    """``prompt_template``: render ``template`` with the input fields (``{{input}}``), ``previous`` and ``outputs``."""

    name: ClassVar[str] = "prompt_template"
    template: str

    def check(self, model_problem: Callable[[str], str | None]) -> Iterable[Issue]:
        try:
            sandbox().parse(self.template)
        except TemplateSyntaxError as err:
            return [("template", f"not a valid template (line {err.lineno}): {err.message}")]
        return ()

    async def run(self, context: StepContext, text: str) -> str:
        return context.render(self.template)


class LLMInference(Step, kw_only=True):
    """``llm_inference``: send the text as the user message to ``model`` (an agent gives its fallbacks)."""

    name: ClassVar[str] = "llm_inference"
    model: str
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    def check(self, model_problem: Callable[[str], str | None]) -> Iterable[Issue]:
        issues = []
        if (problem := model_problem(self.model)) is not None:
            issues.append(("model", problem))
        if self.max_tokens is not None and self.max_tokens < 1:
            issues.append(("max_tokens", "must be a positive integer"))
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            issues.append(("temperature", "must be between 0 and 2"))
        return issues

    async def run(self, context: StepContext, text: str) -> str:
        return await context.infer(self, text)


class MarkdownRender(Step, kw_only=True):
    """``markdown_render``: the text as sanitised HTML (no raw HTML, no images, safe links only)."""

    name: ClassVar[str] = "markdown_render"

    async def run(self, context: StepContext, text: str) -> str:
        return context.markdown(text)


@dataclass(slots=True)
class StepRegistry:
    """Step types by name; built-in ones and plugins' ones are registered alike."""

    types: dict[str, type[Step]] = field(default_factory=dict)

    def register(self, step: type[Step]) -> None:
        """Add a step type under its ``name``."""
        if not step.name:
            raise ValueError(f"{step.__name__} has no name")
        self.types[step.name] = step

    def get(self, name: str) -> type[Step] | None:
        """The step type called ``name``, if any."""
        return self.types.get(name)

    def names(self) -> list[str]:
        """Every registered step type name, sorted."""
        return sorted(self.types)


class Trigger(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A route that runs the workflow: ``{"path": "/api/docs/generate", "method": "POST"}``."""

    path: str
    method: Literal["GET", "POST", "PUT"] = "POST"


class WorkflowSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One entry of ``workflows`` before its steps are typed by their step types."""

    name: str
    steps: list[dict[str, Any]]
    triggers: list[Trigger]
    description: str | None = None


class Workflow(msgspec.Struct, kw_only=True):
    """A checked workflow: typed steps, and the routes that run it."""

    name: str
    steps: list[Step]
    triggers: list[Trigger]
    description: str | None = None


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_PATH = re.compile(r"(/[A-Za-z0-9_.~-]+)+/?")
# Paths of the gateway itself; a workflow route there would shadow (or be shadowed by) a built-in one.
_RESERVED = ("/v1", "/admin", "/static", "/health", "/ready", "/metrics", "/chat", "/models", "/usage", "/keys")
_RESERVED_EXACT = ("/", "/login", "/logout", "/usage.csv")


def _trigger_problem(path: str) -> str | None:
    if not _PATH.fullmatch(path) or "/../" in f"{path}/" or "/./" in f"{path}/":
        return "must be an absolute path of plain segments (letters, digits, '_', '-', '.', '~'), e.g. '/api/x'"
    if path in _RESERVED_EXACT or any(path == p or path.startswith(p + "/") for p in _RESERVED):
        return f"{path!r} belongs to the gateway itself"
    return None


def model_checker(
    agents: Iterable[str], aliases: Iterable[str], providers: dict[str, Any], unknown_to_default: bool
) -> Callable[[str], str | None]:
    """Checks a step's model name as the router would resolve it: an agent, an alias, ``provider/model`` of a
    configured provider (a listed model, when the provider lists them), or a model exactly one provider lists."""
    names = {*agents, *aliases}
    if names & {"defaults", "default"}:
        names |= {"defaults", "default"}

    def problem(ref: str) -> str | None:
        provider, sep, model = ref.partition("/")
        if ref in names or (not sep and unknown_to_default):
            return None
        if sep:
            if provider not in providers:
                return f"unknown provider {provider!r} (providers: {', '.join(sorted(providers)) or 'none configured'})"
            listed = getattr(providers[provider], "models", None)
            return f"provider {provider!r} does not list model {model!r}" if listed and model not in listed else None
        owners = [name for name, section in providers.items() if ref in (getattr(section, "models", None) or ())]
        return None if len(owners) == 1 else f"not an agent, alias or 'provider/model' reference: {ref!r}"

    return problem


def check_workflows(
    specs: list[WorkflowSpec],
    steps: StepRegistry,
    model_problem: Callable[[str], str | None],
    convert_issue: Callable[[msgspec.ValidationError, str], Issue],
) -> tuple[list[Workflow], list[Issue]]:
    """Type each workflow's steps by their step type and check names, triggers and options.

    Returns the workflows and every ``(path, problem)`` found; ``convert_issue`` turns a msgspec error in a
    step into one (``minigate.gateway.config.schema`` formats them for every section alike).
    """
    workflows: list[Workflow] = []
    issues: list[Issue] = []
    routes: dict[tuple[str, str], str] = {}
    names: set[str] = set()
    for i, spec in enumerate(specs):
        base = f"workflows[{i}]"
        if not _NAME.fullmatch(spec.name):
            issues.append((f"{base}.name", "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"))
        elif spec.name in names:
            issues.append((f"{base}.name", f"another workflow is called {spec.name!r}"))
        names.add(spec.name)
        if not spec.steps:
            issues.append((f"{base}.steps", "a workflow needs at least one step"))
        if not spec.triggers:
            issues.append((f"{base}.triggers", "a workflow needs at least one trigger (a route that runs it)"))
        for j, trigger in enumerate(spec.triggers):
            where = f"{base}.triggers[{j}]"
            if (problem := _trigger_problem(trigger.path)) is not None:
                issues.append((f"{where}.path", problem))
            elif (owner := routes.setdefault((trigger.method, trigger.path.rstrip("/")), spec.name)) != spec.name:
                issues.append((where, f"{trigger.method} {trigger.path} already runs workflow {owner!r}"))
        typed: list[Step] = []
        for j, section in enumerate(spec.steps):
            where = f"{base}.steps[{j}]"
            kind = steps.get(str(section.get("type") or ""))
            if kind is None:
                known = ", ".join(steps.names())
                issues.append((f"{where}.type", f"unknown step type {section.get('type')!r} (known: {known})"))
                continue
            try:
                step = msgspec.convert(section, kind)
            except msgspec.ValidationError as err:
                issues.append(convert_issue(err, where))
                continue
            issues.extend((f"{where}.{option}", problem) for option, problem in step.check(model_problem))
            typed.append(step)
        workflows.append(Workflow(name=spec.name, steps=typed, triggers=spec.triggers, description=spec.description))
    return workflows, issues

"""Typed configuration: the seed JSON format, ``${VAR}`` expansion, and errors that name their JSON path.

Three steps, each reporting every problem as ``path: message``: expand variables, convert with msgspec (types,
unknown keys), check what types cannot say (URLs, model references, ranges).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from minigate.gateway.config.prices import PriceTable, check_prices
from minigate.gateway.config.resources import apply_resources, check_agent_resources, takes_resources
from minigate.gateway.config.sections import (
    STRATEGIES,
    AgentConfig,
    GroupSpec,
    ModelsConfig,
    PluginsConfig,
    RouterConfig,
    ServerConfig,
    Strict,
)
from minigate.gateway.config.workflow_steps import StepRegistry, Workflow, WorkflowSpec, check_workflows, model_checker
from minigate.gateway.core.wire import JSON_DECODE_ERRORS, split_validation_error
from minigate.providers.registry import ProviderRegistry

__all__ = [
    "Config",
    "ConfigError",
    "Registries",
    "check_private",
    "check_references",
    "load_config",
    "parse_config",
    "plugins_section",
    "read_json",
]


class ConfigError(Exception):
    """A configuration was refused; ``issues`` lists every ``(path, message)`` found."""

    def __init__(self, issues: list[tuple[str, str]]) -> None:
        self.issues = issues
        super().__init__("\n".join(f"{path}: {message}" if path else message for path, message in issues))


class Registries(Protocol):
    """The types a config is checked against (``minigate.gateway.plugins.loader.Extensions`` holds them, extended by
    plugins)."""

    providers: ProviderRegistry
    steps: StepRegistry


class _RawConfig(Strict):
    # Sections keyed by user-chosen names are converted one entry at a time, so errors can name the key.
    agents: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    models: ModelsConfig = msgspec.field(default_factory=ModelsConfig)
    router: RouterConfig = msgspec.field(default_factory=RouterConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    plugins: PluginsConfig = msgspec.field(default_factory=PluginsConfig)
    workflows: list[WorkflowSpec] = msgspec.field(default_factory=list)


class Config(msgspec.Struct, kw_only=True):
    """A checked configuration, with provider sections converted to their provider type's struct."""

    agents: dict[str, AgentConfig]
    providers: dict[str, tuple[str, Any]]  # name -> (provider type name, typed config struct)
    aliases: dict[str, str]
    router: RouterConfig
    server: ServerConfig
    base_dir: Path
    source: str | None = None
    plugins: PluginsConfig = msgspec.field(default_factory=PluginsConfig)
    workflows: list[Workflow] = msgspec.field(default_factory=list)
    local_providers: frozenset[str] = frozenset()  # providers whose requests stay on this machine
    # Which models take images, by provider (the sections' ``vision`` key, else the type's default): True all,
    # False none, a set the models named; None: unknown, the upstream decides. See :meth:`takes_images`.
    vision: dict[str, bool | frozenset[str] | None] = msgspec.field(default_factory=dict)
    prices: PriceTable = msgspec.field(default_factory=lambda: PriceTable({}, frozenset()))  # models.prices + shipped

    @property
    def default_agent(self) -> AgentConfig | None:
        """``agents.defaults`` (``agents.default`` is accepted too)."""
        return self.agents.get("defaults") or self.agents.get("default")

    def takes_images(self, provider: str, model: str) -> bool | None:
        """Whether ``provider/model`` takes images: True, False, or None when only the upstream can tell."""
        vision = self.vision.get(provider)
        return model in vision if isinstance(vision, frozenset) else vision

    def path(self, value: str) -> Path:
        """Resolve a configured path against the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def database_url(self) -> str:
        """The SQLAlchemy URL: ``server.database_url`` or a SQLite file in the data folder."""
        if self.server.database_url:
            return self.server.database_url
        return f"sqlite+aiosqlite:///{self.path(self.server.data_dir) / 'minigate.db'}"


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(node: Any, path: str, env: Mapping[str, str], issues: list[tuple[str, str]]) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), env, issues) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{path}[{i}]", env, issues) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def sub(m: re.Match[str]) -> str:
            if m.group(1) in env:
                return env[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            issues.append((path, f"environment variable {m.group(1)} is not set"))
            return m.group(0)

        return _VAR.sub(sub, node)
    return node


def _validation_issue(err: msgspec.ValidationError, prefix: str) -> tuple[str, str]:
    """Turn msgspec's ``Expected `int`, got `str` - at `$.a.b``` into ``("a.b", "expected int, got str")``."""
    message, where = split_validation_error(err)
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        where, message = f"{where}.{unknown.group(1)}", "unknown key"
    missing = re.match(r"Object missing required field `(.+)`", message)
    if missing:
        where, message = f"{where}.{missing.group(1)}", "required"
    message = message.replace("`", "")
    path = (prefix + where).lstrip(".")
    return path, message[:1].lower() + message[1:]


def _check_percent_or_bytes(value: str | int, path: str, issues: list[tuple[str, str]]) -> None:
    if isinstance(value, int):
        if value <= 0:
            issues.append((path, "must be a positive number of bytes"))
        return
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
    if m is None or not 0 < float(m.group(1)) <= 100:
        issues.append((path, f"not a percentage between 0% and 100% or a byte count: {value!r}"))


def _vision(
    section: dict[str, Any], default: bool | None, path: str, issues: list[tuple[str, str]]
) -> tuple[dict[str, Any], bool | frozenset[str] | None]:
    """A provider section without its ``vision`` key (any provider type may have it), and what the key says."""
    if "vision" not in section:
        return section, default
    rest = {k: v for k, v in section.items() if k != "vision"}
    value = section["vision"]
    if isinstance(value, bool):
        return rest, value
    if isinstance(value, list) and all(isinstance(name, str) and name for name in value):
        return rest, frozenset(value)
    issues.append((path, "must be true, false or a list of the provider's model names that take images"))
    return rest, default


def check_references(
    agents: dict[str, AgentConfig],
    aliases: dict[str, str],
    known: dict[str, Any],
    issues: list[tuple[str, str]],
) -> None:
    """Append to ``issues`` every chain or alias naming an unknown provider, an unlisted model or a bad reference."""

    def check_ref(ref: str, path: str) -> None:
        provider, sep, model = ref.partition("/")
        if not sep or not provider or not model:
            issues.append((path, f"not a model reference 'provider/model': {ref!r}"))
        elif provider not in known:
            names = ", ".join(sorted(known)) or "none configured"
            issues.append((path, f"unknown provider {provider!r} (providers: {names})"))
        else:
            listed = getattr(known[provider], "models", None)
            if listed and model not in listed:
                issues.append((path, f"provider {provider!r} does not list model {model!r}"))

    for name, agent in agents.items():
        base = f"agents.{name}"
        if "/" in name:
            issues.append((base, "an agent name cannot contain '/'"))
        if agent.model.fallback is not None and agent.model.fallbacks is not None:
            issues.append((f"{base}.model", "give either 'fallback' or 'fallbacks', not both"))
        key = "fallback" if agent.model.fallback is not None else "fallbacks"
        single = agent.model.fallback is not None and not isinstance(agent.model.fallback, list)
        for i, entry in enumerate(agent.model.entries()):
            path = f"{base}.model.primary" if i == 0 else f"{base}.model.{key}" + ("" if single else f"[{i - 1}]")
            if isinstance(entry, str):
                check_ref(entry, path)
            else:
                _check_group(entry, path, check_ref, issues)
        res = agent.resources
        if res is not None:
            if res.cpu_threads is not None and res.cpu_threads <= 0:
                issues.append((f"{base}.resources.cpu_threads", "must be a positive integer"))
            if res.gpu_memory is not None:
                _check_percent_or_bytes(res.gpu_memory, f"{base}.resources.gpu_memory", issues)
    for alias, target in aliases.items():
        if "/" in target:
            check_ref(target, f"models.aliases.{alias}")
        elif target not in agents and not (target == "default" and "defaults" in agents):
            issues.append((f"models.aliases.{alias}", f"not an agent or a 'provider/model' reference: {target!r}"))


def _check_group(
    spec: GroupSpec, path: str, check_ref: Callable[[str, str], None], issues: list[tuple[str, str]]
) -> None:
    """Append to ``issues`` what is wrong with one group of a chain."""
    if not spec.group:
        issues.append((f"{path}.group", "a group needs at least one deployment"))
    if spec.strategy is not None and spec.strategy not in STRATEGIES:
        issues.append((f"{path}.strategy", f"unknown strategy {spec.strategy!r} (strategies: {', '.join(STRATEGIES)})"))
    seen: set[str] = set()
    for i, (member, ref) in enumerate(zip(spec.group, spec.refs(), strict=True)):
        where = f"{path}.group[{i}]"
        if ref in seen:
            issues.append((where, f"{ref!r} is listed twice in the group"))
        seen.add(ref)
        check_ref(ref, where if isinstance(member, str) else f"{where}.ref")
        if isinstance(member, str):
            continue
        if not (member.weight > 0 and math.isfinite(member.weight)):
            issues.append((f"{where}.weight", f"must be a positive number (got {member.weight})"))
        elif spec.kind() != "weighted":
            issues.append((f"{where}.weight", f"weights apply only to strategy 'weighted' (not {spec.kind()!r})"))


def check_private(
    agents: dict[str, AgentConfig], local: set[str], known: set[str], issues: list[tuple[str, str]]
) -> None:
    """Append to ``issues`` every deployment of a ``private`` agent whose requests could leave the machine."""
    for name, agent in agents.items():
        if not agent.private:
            continue
        for ref in agent.model.chain():
            provider = ref.partition("/")[0]
            if provider in known and provider not in local:  # an unknown one is check_references' to report
                issues.append(
                    (
                        f"agents.{name}.model",
                        f"the agent is private, but {ref!r} is not a local deployment (local providers: "
                        f"{', '.join(sorted(local)) or 'none'}); requests to it could leave this machine",
                    )
                )


def parse_config(
    raw: Any,
    types: Registries,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    source: str | None = None,
) -> Config:
    """Check a decoded JSON document against ``types`` and build a :class:`Config`, or raise :class:`ConfigError`.

    Loads nothing: provider sections and workflow steps of types no plugin registered yet are refused; the ``plugins``
    section is kept for ``minigate.gateway.plugins.loader.configure``, which loads the plugins before this check."""
    issues: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        raise ConfigError([("", "the config must be a JSON object")])
    expanded = _expand(raw, "", os.environ if env is None else env, issues)
    try:
        cfg = msgspec.convert(expanded, _RawConfig)
    except msgspec.ValidationError as err:
        raise ConfigError([*issues, _validation_issue(err, "")]) from None
    agents: dict[str, AgentConfig] = {}
    for name, section in cfg.agents.items():
        try:
            agents[name] = msgspec.convert(section, AgentConfig)
        except msgspec.ValidationError as err:
            issue = _validation_issue(err, f"agents.{name}")
            if re.search(r"\.group\[\d+\]\.group$", issue[0]):  # a group given as a member of a group
                issue = (issue[0][: -len(".group")], "a group cannot contain a group: list its deployments instead")
            issues.append(issue)
    providers: dict[str, tuple[str, Any]] = {}
    local: set[str] = set()
    vision: dict[str, bool | frozenset[str] | None] = {}
    for name, section in cfg.models.providers.items():
        path = f"models.providers.{name}"
        if "/" in name or not name:
            issues.append((path, "a provider name cannot be empty or contain '/'"))
            continue
        type_name = str(section.get("type") or "openai")
        kind = types.providers.get(type_name)
        if kind is None:
            known = ", ".join(types.providers.names())
            issues.append((f"{path}.type", f"unknown provider type {type_name!r} (known: {known})"))
            continue
        section, vision[name] = _vision(section, kind.vision, f"{path}.vision", issues)
        try:
            typed = msgspec.convert(section, kind.config_type)
        except msgspec.ValidationError as err:
            issues.append(_validation_issue(err, path))
            continue
        typed, origin = apply_resources(name, typed, agents, issues)  # the agents' resources, where it takes them
        for sub, message in kind.check(typed):
            where = f"{path}.{sub}" if sub else path
            issue = (origin[sub], f"{message} (for models.providers.{name})") if sub in origin else (where, message)
            issues.append(issue)
        providers[name] = (type_name, typed)
        if kind.is_local(typed):
            local.add(name)
    check_private(agents, local, set(providers), issues)
    check_agent_resources(agents, {n for n, (_, c) in providers.items() if takes_resources(c)}, issues)
    check_references(agents, cfg.models.aliases, {n: c for n, (_, c) in providers.items()}, issues)
    default = cfg.router.unknown_model == "default"
    model_problem = model_checker(agents, cfg.models.aliases, {n: c for n, (_, c) in providers.items()}, default)
    prices = check_prices(cfg.models.prices, issues)
    workflows, found = check_workflows(cfg.workflows, types.steps, model_problem, _validation_issue)
    issues.extend(found)
    if cfg.router.timeout <= 0:
        issues.append(("router.timeout", "must be positive"))
    if not 0 < cfg.server.port < 65536:
        issues.append(("server.port", "must be between 1 and 65535"))
    if cfg.server.shutdown_grace < 0:
        issues.append(("server.shutdown_grace", "must be zero or more seconds"))
    if cfg.server.workers is not None and not 1 <= cfg.server.workers <= 64:
        issues.append(("server.workers", "must be from 1 to 64 processes"))
    if cfg.server.body_timeout <= 0:
        issues.append(("server.body_timeout", "must be positive"))
    if cfg.server.max_body_bytes <= 0:
        issues.append(("server.max_body_bytes", "must be positive"))
    if issues:
        raise ConfigError(issues)
    return Config(
        agents=agents,
        providers=providers,
        aliases=cfg.models.aliases,
        router=cfg.router,
        server=cfg.server,
        base_dir=base_dir or Path.cwd(),
        source=source,
        plugins=cfg.plugins,
        workflows=workflows,
        local_providers=frozenset(local),
        vision={name: vision[name] for name in providers},
        prices=PriceTable(prices, frozenset(local)),
    )


def plugins_section(raw: Any, env: Mapping[str, str]) -> PluginsConfig:
    """The ``plugins`` section of a decoded document, what the plugin loader needs before the full check; a
    document that does not convert at all is refused here as :func:`parse_config` would refuse it."""
    if not isinstance(raw, dict):
        raise ConfigError([("", "the config must be a JSON object")])
    issues: list[tuple[str, str]] = []
    expanded = _expand(raw, "", env, issues)
    try:
        return msgspec.convert(expanded, _RawConfig).plugins
    except msgspec.ValidationError as err:
        raise ConfigError([*issues, _validation_issue(err, "")]) from None


def read_json(file: Path) -> Any:
    """A config file's decoded JSON; :class:`ConfigError` when it cannot be read or is not JSON."""
    try:
        text = file.read_bytes()
    except OSError as err:
        raise ConfigError([("", f"cannot read config file {str(file)!r}: {err.strerror}")]) from None
    try:
        return msgspec.json.decode(text)
    except JSON_DECODE_ERRORS as err:
        raise ConfigError([("", f"{file}: not valid JSON: {err}")]) from None


def load_config(
    path: str | os.PathLike[str] | None, types: Registries, *, default: dict[str, Any] | None = None
) -> Config:
    """Read and check a config file against ``types``; with no path, check ``default`` (the built-in one)."""
    if path is None:
        return parse_config(default or {}, types, source=None)
    file = Path(path)
    return parse_config(read_json(file), types, base_dir=file.resolve().parent, source=str(file))

"""Agents' ``resources`` applied to the local provider sections they use, or refused with the reason.

A provider section takes resources when its type declares the fields ``cpu_threads``, ``gpu_memory`` and
``preallocate_memory`` (``onnxruntime-genai`` does). A value the section sets itself wins over
``agents.defaults.resources``, which applies to every such section; any other agent's resources apply to the
sections its chain names and are refused when it names none, when two agents give one section different values
(a provider's workers share one setting), or when the section sets a different value itself.
"""

from __future__ import annotations

from typing import Any

import msgspec

from minigate.gateway.config.sections import AgentConfig, Resources

__all__ = ["RESOURCE_FIELDS", "apply_resources", "check_agent_resources", "takes_resources", "unused_resources"]

RESOURCE_FIELDS = ("cpu_threads", "gpu_memory", "preallocate_memory")
_DEFAULTS = ("defaults", "default")


def takes_resources(section: Any) -> bool:
    """Whether a typed provider section has the resource fields."""
    fields = getattr(section, "__struct_fields__", ())
    return all(name in fields for name in RESOURCE_FIELDS)


def _users(provider: str, agents: dict[str, AgentConfig]) -> list[tuple[str, Resources]]:
    """The agents other than the defaults whose chain names ``provider`` and which give resources."""
    out = []
    for name, agent in agents.items():
        if name in _DEFAULTS or agent.resources is None:
            continue
        if any(ref.partition("/")[0] == provider for ref in agent.model.chain()):
            out.append((name, agent.resources))
    return out


def apply_resources(
    provider: str, section: Any, agents: dict[str, AgentConfig], issues: list[tuple[str, str]]
) -> tuple[Any, dict[str, str]]:
    """``section`` with the agents' resources filled in, and where each filled value came from (a config path);
    conflicts are appended to ``issues``."""
    if not takes_resources(section):
        return section, {}
    defaults = next((agents[n].resources for n in _DEFAULTS if n in agents and agents[n].resources), None)
    users = _users(provider, agents)
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for field in RESOURCE_FIELDS:
        own = getattr(section, field)
        given = [(name, getattr(res, field)) for name, res in users if getattr(res, field) is not None]
        for name, value in given:
            path = f"agents.{name}.resources.{field}"
            if own is not None and str(own) != str(value):
                issues.append(
                    (path, f"models.providers.{provider}.{field} is {own!r}: {value!r} cannot apply to it as well")
                )
            elif str(value) != str(given[0][1]):
                issues.append(
                    (
                        path,
                        f"agents.{given[0][0]} gives local provider {provider!r} {field} {given[0][1]!r}: a provider's "
                        f"workers share one setting (set it on models.providers.{provider})",
                    )
                )
        if own is not None:
            continue
        if given:
            values[field], origin[field] = given[0][1], f"agents.{given[0][0]}.resources.{field}"
        elif defaults is not None and getattr(defaults, field) is not None:
            values[field], origin[field] = getattr(defaults, field), f"agents.defaults.resources.{field}"
    return (msgspec.structs.replace(section, **values) if values else section), origin


def check_agent_resources(agents: dict[str, AgentConfig], takers: set[str], issues: list[tuple[str, str]]) -> None:
    """Refuse an agent's resources (other than the defaults') when its chain names no local provider taking them."""
    for name, agent in agents.items():
        if name in _DEFAULTS or agent.resources is None:
            continue
        if not any(ref.partition("/")[0] in takers for ref in agent.model.chain()):
            local = ", ".join(sorted(takers)) or "none configured"
            issues.append(
                (
                    f"agents.{name}.resources",
                    f"the agent's chain names no local model (local providers: {local}); resources apply only to "
                    f"the local deployments an agent uses",
                )
            )


def unused_resources(agents: dict[str, AgentConfig], takers: set[str]) -> list[tuple[str, str]]:
    """``(path, note)`` when ``agents.defaults.resources`` has no local provider to apply to."""
    for name in _DEFAULTS:
        agent = agents.get(name)
        if agent is not None and agent.resources is not None and not takers:
            return [(f"agents.{name}.resources", "unused: no local (onnxruntime-genai) provider is configured")]
    return []

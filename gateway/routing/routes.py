"""Which deployments a requested model name leads to.

A name resolves, in this order, to: an agent (``default`` is ``agents.defaults``), an alias, a
``provider/model`` reference, or a bare model name that exactly one provider lists. An unknown name follows
``agents.defaults`` when ``router.unknown_model`` is ``"default"``, and is a 404 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minigate.gateway.config.schema import Config
from minigate.gateway.config.sections import GroupSpec
from minigate.gateway.core.errors import InvalidRequest
from minigate.gateway.routing.groups import Group

__all__ = ["MAX_MODEL_NAME", "Deployment", "Route", "RouteTable", "check_model_name", "described"]

MAX_MODEL_NAME = 256  # characters; OpenAI's own names are a few dozen


def check_model_name(name: str) -> str:
    """``name`` if a client may ask for it: 1-256 printable characters (letters of any script, but no control,
    format or separator characters other than the space); else a 400 naming the ``model`` parameter.

    Names end up in headers, logs and the usage page: this keeps line breaks, NUL and invisible text out of
    them, and is checked before anything is routed or called.
    """
    if 0 < len(name) <= MAX_MODEL_NAME and name.isprintable():
        return name
    raise InvalidRequest(
        f"Invalid model name: it must be 1-{MAX_MODEL_NAME} printable characters, without control characters "
        f"or line breaks (got {len(name)} characters).",
        param="model",
        code="invalid_model",
    )


@dataclass(frozen=True, slots=True)
class Deployment:
    """One model of one provider: an entry of a chain. ``group``: the group it belongs to in that chain, whose
    members stand next to each other (see :mod:`minigate.gateway.routing.groups`)."""

    provider: str
    model: str
    group: Group | None = field(default=None, compare=False, repr=False)

    @property
    def ref(self) -> str:
        """``provider/model``."""
        return f"{self.provider}/{self.model}"

    @classmethod
    def parse(cls, ref: str) -> Deployment:
        """Split ``provider/model`` at the first slash (model names may contain slashes)."""
        provider, _, model = ref.partition("/")
        return cls(provider, model)


@dataclass(frozen=True, slots=True)
class Route:
    """The ordered chain a request follows; ``agent`` is set when the name was an agent or led to one.

    ``local`` names the providers whose requests stay on this machine; ``capability_fallback`` lets a
    deployment's capability refusal hand the request on to one that is not local (see
    ``minigate.gateway.routing.chain``).
    """

    requested: str
    agent: str | None
    chain: tuple[Deployment, ...]
    local: frozenset[str] = frozenset()
    capability_fallback: bool = False

    grouped: bool = field(init=False, compare=False)  # the chain holds a group, whose order is chosen per request

    def __post_init__(self) -> None:
        object.__setattr__(self, "grouped", any(d.group is not None for d in self.chain))

    def is_local(self, deployment: Deployment) -> bool:
        """True when requests to ``deployment`` stay on this machine."""
        return deployment.provider in self.local


class RouteTable:
    """Resolves requested model names to routes; built once per config."""

    def __init__(self, config: Config, provider_models: dict[str, list[str]]) -> None:
        self._config = config
        self._agents = {name: _chain(a.model.entries()) for name, a in config.agents.items()}
        if "defaults" in self._agents:
            self._agents.setdefault("default", self._agents["defaults"])
        self._providers = provider_models
        owners: dict[str, list[str]] = {}
        for provider, models in provider_models.items():
            for model in models:
                owners.setdefault(model, []).append(provider)
        # A bare model name is a shortcut only where it is unambiguous.
        self._bare = {m: Deployment(ps[0], m) for m, ps in owners.items() if len(ps) == 1}
        named = {f"{p}/{m}" for p, models in provider_models.items() for m in models}
        named.update(d.ref for chain in self._agents.values() for d in chain)
        named.update(t for t in config.aliases.values() if "/" in t)
        self.named = frozenset(named)

    def listed(self, deployment: Deployment) -> bool:
        """True when the config or a provider names this deployment (not only a client's request)."""
        return deployment.ref in self.named

    def _agent_route(self, requested: str, agent: str) -> Route:
        name = "defaults" if agent == "default" and "defaults" in self._config.agents else agent
        section = self._config.agents.get(name)
        allowed = section is not None and section.capability_fallback
        return Route(requested, name, self._agents[agent], self._config.local_providers, allowed)

    def resolve(self, name: str) -> Route | None:
        """The route for a requested model name, or None if nothing routes it."""
        if name in self._agents:
            return self._agent_route(name, name)
        target = self._config.aliases.get(name)
        if target is not None:
            if target in self._agents:
                return self._agent_route(name, target)
            return Route(name, None, (Deployment.parse(target),), self._config.local_providers)
        provider, sep, model = name.partition("/")
        if sep and provider in self._providers and model:
            return Route(name, None, (Deployment(provider, model),), self._config.local_providers)
        if name in self._bare:
            return Route(name, None, (self._bare[name],), self._config.local_providers)
        if self._config.router.unknown_model == "default" and "default" in self._agents:
            return self._agent_route(name, "default")
        return None

    def listing(self) -> list[tuple[str, str, dict[str, object]]]:
        """``(id, kind, details)`` for every routable name: agents, aliases, provider models."""
        out: list[tuple[str, str, dict[str, object]]] = []
        for name, chain in self._agents.items():
            if name in ("default", "defaults"):
                continue
            out.append((name, "agent", {"chain": described(chain)}))
        if "default" in self._agents:
            out.insert(0, ("default", "agent", {"chain": described(self._agents["default"])}))
        for alias, target in self._config.aliases.items():
            out.append((alias, "alias", {"target": target}))
        seen: set[str] = set()
        for provider, models in self._providers.items():
            for model in models:
                seen.add(f"{provider}/{model}")
        for chain in self._agents.values():
            seen.update(d.ref for d in chain)
        for ref in sorted(seen):
            out.append((ref, "model", {"provider": ref.partition("/")[0]}))
        return out


def _chain(entries: list[str | GroupSpec]) -> tuple[Deployment, ...]:
    """A configured chain as deployments, each group's members in its place, tagged with one :class:`Group`."""
    out: list[Deployment] = []
    for entry in entries:
        if isinstance(entry, str):
            out.append(Deployment.parse(entry))
            continue
        group = Group(entry.kind(), entry.weights())
        out.extend(Deployment(d.provider, d.model, group) for d in map(Deployment.parse, entry.refs()))
    return tuple(out)


def described(chain: tuple[Deployment, ...]) -> list[str | dict[str, object]]:
    """A chain as the config writes it: references, and ``{"group": [...], "strategy": ...}`` for a group."""
    runs: list[tuple[Group | None, list[Deployment]]] = []
    for d in chain:
        if d.group is not None and runs and runs[-1][0] is d.group:
            runs[-1][1].append(d)
        else:
            runs.append((d.group, [d]))
    out: list[str | dict[str, object]] = []
    for group, members in runs:
        if group is None:
            out.extend(d.ref for d in members)
            continue
        weighted = group.strategy == "weighted"
        refs = [{"ref": d.ref, "weight": group.weights.get(d.ref, 1.0)} if weighted else d.ref for d in members]
        out.append({"group": refs, "strategy": group.strategy})
    return out

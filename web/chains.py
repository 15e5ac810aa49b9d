"""Agents' primary/fallback chains as edited in the web UI: stored, validated, applied without restart.

An override (``chain_overrides`` table) rebuilds the agents and the route table, so the next request follows it;
requests already running keep their route, and the configured chains stay known for a reset.
"""

from __future__ import annotations

import logging
from typing import cast

import msgspec
from sqlalchemy import Table, delete, insert, select

from minigate.gateway.config.schema import Config, check_references
from minigate.gateway.config.sections import AgentConfig, AgentModel
from minigate.gateway.routing.routes import RouteTable
from minigate.gateway.runtime.gateway import Gateway
from minigate.gateway.storage import Database
from minigate.gateway.storage.conversations import ChainOverrideRow
from minigate.gateway.storage.tables import utcnow
from minigate.web.state import WebState

__all__ = [
    "MAX_CHAIN",
    "apply_stored_overrides",
    "base_config",
    "delete_override",
    "ensure_overrides",
    "load_overrides",
    "save_override",
    "validate_chain",
]

log = logging.getLogger("minigate")

MAX_CHAIN = 10
_OVERRIDES = cast(Table, ChainOverrideRow.__table__)


async def load_overrides(database: Database) -> dict[str, list[str]]:
    """Every stored override, by agent name."""
    async with database.engine.connect() as conn:
        rows = (await conn.execute(select(_OVERRIDES.c.agent, _OVERRIDES.c.chain))).all()
    return {str(agent): list(msgspec.json.decode(chain)) for agent, chain in rows}


async def save_override(database: Database, agent: str, chain: list[str]) -> None:
    """Store (or replace) an agent's chain."""
    values = {"agent": agent, "chain": msgspec.json.encode(chain).decode(), "updated_at": utcnow()}
    async with database.engine.begin() as conn:  # one transaction: portable "upsert"
        await conn.execute(delete(_OVERRIDES).where(_OVERRIDES.c.agent == agent))
        await conn.execute(insert(_OVERRIDES).values(**values))


async def delete_override(database: Database, agent: str) -> None:
    """Forget an agent's override (its configured chain applies again)."""
    async with database.engine.begin() as conn:
        await conn.execute(delete(_OVERRIDES).where(_OVERRIDES.c.agent == agent))


def validate_chain(gateway: Gateway, base: Config, agent: str, chain: list[str]) -> list[str]:
    """Every problem of ``chain`` for ``agent`` (empty when it may be applied); the config's own checks."""
    problems: list[str] = []
    if agent not in base.agents:
        return [f"there is no agent {agent!r} in the configuration"]
    if base.agents[agent].model.grouped():
        return ["this agent's chain has load-balanced groups, which the chain editor cannot change: edit the config"]
    if not chain:
        return ["the chain needs at least a primary model"]
    if len(chain) > MAX_CHAIN:
        problems.append(f"a chain has at most {MAX_CHAIN} entries")
    if len(set(chain)) != len(chain):
        problems.append("a model appears twice in the chain")
    issues: list[tuple[str, str]] = []
    candidate = {agent: AgentConfig(model=AgentModel(primary=chain[0], fallbacks=[*chain[1:]] or None))}
    check_references(candidate, {}, {n: c for n, (_, c) in base.providers.items()}, issues)
    problems.extend(message for _, message in issues)
    for ref in chain:
        provider_name, _, model = ref.partition("/")
        provider = gateway.providers.get(provider_name)
        listed = provider.models() if provider is not None else []
        if provider is not None and listed and model not in listed and not any(model in m for m, _ in issues):
            problems.append(f"provider {provider_name!r} has no model {model!r} (it has: {', '.join(listed)})")
    return list(dict.fromkeys(problems))


def _apply(gateway: Gateway, base: Config, overrides: dict[str, list[str]]) -> None:
    agents = dict(base.agents)
    for agent, chain in overrides.items():
        problems = validate_chain(gateway, base, agent, chain)
        if problems:
            log.warning("chain override for agent %s ignored: %s", agent, "; ".join(problems))
            continue
        agents[agent] = msgspec.structs.replace(
            agents[agent], model=AgentModel(primary=chain[0], fallbacks=[*chain[1:]] or None)
        )
    config = msgspec.structs.replace(base, agents=agents)
    gateway.routes = RouteTable(config, {name: p.models() for name, p in gateway.providers.items()})
    gateway.config = config


def base_config(gateway: Gateway, web: WebState) -> Config:
    """The configuration as loaded, before any override (remembered at the first apply)."""
    config: Config = web.base_configs.setdefault(id(gateway), gateway.config)
    return config


async def apply_stored_overrides(gateway: Gateway, web: WebState) -> dict[str, list[str]]:
    """Apply the stored overrides to ``gateway``; returns them."""
    base = base_config(gateway, web)
    overrides = await load_overrides(gateway.database)
    _apply(gateway, base, overrides)
    web.applied.add(id(gateway))
    return overrides


async def ensure_overrides(gateway: Gateway, web: WebState) -> None:
    """Apply the stored overrides once per gateway."""
    if id(gateway) not in web.applied:
        await apply_stored_overrides(gateway, web)

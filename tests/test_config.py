"""The config format: the seed example, ${VAR}, and refusals that name their JSON path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from minigate.gateway.config.schema import ConfigError
from minigate.gateway.plugins.loader import builtin_extensions, configure

SEED: dict[str, Any] = {
    "agents": {
        "defaults": {
            "model": {"primary": "openai/gpt-4o-mini", "fallbacks": ["backup/llama3-8b"]},
            "resources": {"gpu_memory": "80%", "cpu_threads": 4},
        },
        "coder": {"model": {"primary": "backup/qwen-coder", "fallback": "openai/gpt-4o-mini"}},
    },
    "models": {
        "providers": {
            "openai": {
                "type": "openai",
                "endpoint": "https://api.openai.com/v1",
                "auth": {"type": "api_key", "value": "${OPENAI_API_KEY}"},
                "models": ["gpt-4o-mini"],
            },
            "backup": {
                "endpoint": "http://local-model-server:5000/v1",
                "auth": {"type": "api_key", "value": "generated-token-xxx"},
            },
        }
    },
}


def parse(raw: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    return configure(raw, builtin_extensions(), env={"OPENAI_API_KEY": "sk-test"} if env is None else env)


def refusal(raw: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse(raw, env)
    return str(err.value).splitlines()


def edit(path: str, value: Any) -> dict[str, Any]:
    raw = json.loads(json.dumps(SEED))
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})  # sections the seed leaves out (server)
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return raw


def test_seed_example_is_accepted() -> None:
    cfg = parse(SEED)
    assert cfg.agents["defaults"].model.chain() == ["openai/gpt-4o-mini", "backup/llama3-8b"]
    assert cfg.agents["coder"].model.chain() == ["backup/qwen-coder", "openai/gpt-4o-mini"]
    type_name, openai_cfg = cfg.providers["openai"]
    assert type_name == "openai" and openai_cfg.auth.value == "sk-test"
    assert cfg.providers["backup"][0] == "openai"  # no type: OpenAI-compatible
    assert cfg.agents["defaults"].resources.cpu_threads == 4


def test_fallback_accepts_a_list_and_env_defaults() -> None:
    raw = edit("agents.coder.model.fallback", ["openai/gpt-4o-mini", "backup/x"])
    assert parse(raw).agents["coder"].model.chain()[1:] == ["openai/gpt-4o-mini", "backup/x"]
    raw = edit("models.providers.backup.auth.value", "${TOKEN:-fallback-token}")
    assert parse(raw).providers["backup"][1].auth.value == "fallback-token"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "models.providers.backup.endpoint",
            "local-model-server",
            "models.providers.backup.endpoint: not a URL",
        ),
        (
            "models.providers.backup.endpoint",
            "file:///etc/passwd",
            "models.providers.backup.endpoint: not a URL",
        ),
        (
            "models.providers.backup.endpoint",
            "http://169.254.169.254/v1",
            "models.providers.backup.endpoint: link",
        ),
        ("models.providers.backup.endpont", "http://x", "models.providers.backup.endpont: unknown key"),
        (
            "models.providers.backup.type",
            "nope",
            "models.providers.backup.type: unknown provider type 'nope'",
        ),
        (
            "models.providers.backup.auth",
            {"type": "header", "value": "v"},
            "models.providers.backup.auth.name: ",
        ),
        ("models.providers.backup.auth", {"type": "magic"}, "models.providers.backup.auth.type: "),
        # The path is the gateway's; what follows it is msgspec's own sentence, which may change with its version.
        ("models.providers.openai.timeout", "soon", "models.providers.openai.timeout: "),
        (
            "agents.defaults.model.primary",
            "gpt-4o-mini",
            "agents.defaults.model.primary: not a model reference",
        ),
        (
            "agents.defaults.model.primary",
            "nobody/x",
            "agents.defaults.model.primary: unknown provider 'nobody'",
        ),
        (
            "agents.defaults.model.primary",
            "openai/gpt-5",
            "agents.defaults.model.primary: provider 'openai' does",
        ),
        (
            "agents.defaults.model.fallbacks",
            ["x/y"],
            "agents.defaults.model.fallbacks[0]: unknown provider 'x'",
        ),
        ("agents.defaults.model.fallbaks", ["x/y"], "agents.defaults.model.fallbaks: unknown key"),
        ("agents.defaults.model.primary", KeyError, "agents.defaults.model.primary: required"),
        (
            "agents.defaults.resources.gpu_memory",
            "180%",
            "agents.defaults.resources.gpu_memory: not a percentage",
        ),
        (
            "agents.defaults.resources.cpu_threads",
            0,
            "agents.defaults.resources.cpu_threads: must be a positive",
        ),
        ("agents.coder.model.fallbacks", ["openai/gpt-4o-mini"], "agents.coder.model: give either"),
        ("server.body_timeout", 0, "server.body_timeout: must be positive"),
        ("server.max_body_bytes", -1, "server.max_body_bytes: must be positive"),
    ],
)
def test_refusals_name_the_json_path(path: str, value: Any, expected: str) -> None:
    assert any(line.startswith(expected) for line in refusal(edit(path, value))), refusal(edit(path, value))


def test_missing_environment_variable_is_refused() -> None:
    assert refusal(SEED, env={}) == [
        "models.providers.openai.auth.value: environment variable OPENAI_API_KEY is not set"
    ]


def test_every_problem_is_reported_at_once() -> None:
    raw = edit("models.providers.backup.endpoint", "nope")
    raw["agents"]["defaults"]["resources"]["cpu_threads"] = -1
    assert len(refusal(raw)) == 2


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minigate.gateway.cli", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_config_check_command(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(edit("models.providers.openai.auth.value", "sk-x")))
    bad.write_text(json.dumps(edit("models.providers.backup.endpoint", "local-model-server")))
    ok = run_cli("config", "check", str(good))
    assert ok.returncode == 0 and "ok" in ok.stdout
    refused = run_cli("config", "check", str(bad))
    assert refused.returncode == 2
    assert "models.providers.backup.endpoint: not a URL" in refused.stderr
    assert "Traceback" not in refused.stderr
    broken = tmp_path / "broken.json"
    for text in (b"{not json", b'{"agents": "caf\xe9"}'):  # not JSON; not UTF-8 (whichever error msgspec raises)
        broken.write_bytes(text)
        result = run_cli("config", "check", str(broken))
        assert result.returncode == 2 and "not valid JSON" in result.stderr and "Traceback" not in result.stderr
    missing = run_cli("config", "check", str(tmp_path / "absent.json"))
    assert missing.returncode == 2 and "cannot read config file" in missing.stderr


def _with_local(raw: dict[str, Any]) -> dict[str, Any]:
    raw = json.loads(json.dumps(raw))
    providers = raw["models"]["providers"]
    providers["echo"] = {"type": "fake", "models": ["echo"]}
    providers["llama"] = {"endpoint": "http://127.0.0.1:8081/v1", "models": ["qwen"]}
    return raw


def test_which_providers_are_local() -> None:
    """Local: in-process and on-machine engines, and OpenAI-compatible servers on a loopback address."""
    raw = _with_local(SEED)
    raw["models"]["providers"]["v6"] = {"endpoint": "http://[::1]:9000/v1"}
    raw["models"]["providers"]["named"] = {"endpoint": "http://localhost:9000/v1"}
    raw["models"]["providers"]["lan"] = {"endpoint": "http://192.168.1.20:9000/v1"}
    raw["models"]["providers"]["trick"] = {"endpoint": "http://127.0.0.1.example.com/v1"}
    assert parse(raw).local_providers == {"echo", "llama", "v6", "named"}


def test_a_private_agent_may_chain_only_local_deployments() -> None:
    raw = _with_local(SEED)
    raw["agents"]["home"] = {"model": {"primary": "echo/echo", "fallbacks": ["llama/qwen"]}, "private": True}
    config = parse(raw)
    assert config.agents["home"].private and not config.agents["home"].capability_fallback
    raw["agents"]["home"]["model"]["fallbacks"].append("openai/gpt-4o-mini")
    (line,) = [line for line in refusal(raw) if "agents.home" in line]
    assert "agents.home.model" in line and "'openai/gpt-4o-mini' is not a local deployment" in line

"""``resources`` as the seed config writes them: ``gpu_memory: "80%"`` starts local models (it crashed ``serve``
before), is noted as unused on the CPU and refused for a GPU back end that cannot honour it; any agent's resources
apply to the local providers its chain names, or are refused; ``preallocate_memory`` sizes KV caches up front."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from minigate.gateway.cli import main
from minigate.gateway.config.schema import ConfigError
from minigate.gateway.plugins.loader import builtin_extensions, configure
from minigate.gateway.runtime.gateway import build_providers
from tests.providers.onnx.helpers import TINY, chat

pytestmark = pytest.mark.fast


def _config(local: dict[str, Any] | None = None, **agents: Any) -> dict[str, Any]:
    """Two local providers, a remote one, and the seed's defaults (``"gpu_memory": "80%"``)."""
    seed = {
        "defaults": {
            "model": {"primary": f"local/{TINY}", "fallbacks": ["openai/gpt-4o-mini"]},
            "resources": {"gpu_memory": "80%", "cpu_threads": 2},
        }
    }
    return {
        "agents": {**seed, **agents},
        "models": {
            "providers": {
                "local": {"type": "onnxruntime-genai", "idle_ttl": None, **(local or {})},
                "other": {"type": "onnxruntime-genai", "models_dir": "./other"},
                "openai": {"endpoint": "https://api.openai.com/v1", "models": ["gpt-4o-mini"]},
            }
        },
    }


def _refusals(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        configure(raw, builtin_extensions(), env={})
    return str(caught.value).splitlines()


async def test_the_seed_resources_start_a_local_model(models_dir: Path) -> None:
    extensions = builtin_extensions()
    config = configure(_config({"models_dir": str(models_dir)}), extensions, env={})
    assert config.providers["local"][1].gpu_memory == "80%"
    providers, _ = build_providers(config, extensions.providers)  # raised "gpu_memory: not a size: '80%'" before
    local: Any = providers["local"]
    assert local.worker_options.cpu_threads == 2 and local.worker_options.gpu_memory_bytes is None
    try:
        await local.start()
        body = await local.complete(chat("hello", max_tokens=4))
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        assert local.placement.describe()["notes"] == ["gpu_memory '80%' is unused: the models run on the CPU"]
        assert local.runs_on(TINY) == {"execution_provider": "cpu", "device": "CPU"}
    finally:
        await local.close()


def test_config_check_says_gpu_memory_is_unused_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "config.json"
    file.write_text(json.dumps(_config()))
    assert main(["config", "check", str(file)]) == 0
    out = capsys.readouterr().out
    assert "note: models.providers.local.gpu_memory: unused: the models run on the CPU" in out
    assert "note: models.providers.other.gpu_memory: unused: the models run on the CPU" in out


def test_a_gpu_back_end_that_cannot_honour_gpu_memory_is_refused() -> None:
    lines = _refusals(_config({"execution_provider": "dml"}))
    assert lines == [
        "agents.defaults.resources.gpu_memory: dml cannot honour a GPU memory limit (only cuda takes one): remove "
        "gpu_memory (for models.providers.local)"
    ]
    own = _config({"execution_provider": "dml", "gpu_memory": "1GiB"})
    assert _refusals(own) == [
        "models.providers.local.gpu_memory: dml cannot honour a GPU memory limit (only cuda takes one): "
        "remove gpu_memory"
    ]
    cuda = configure(_config({"execution_provider": "cuda"}), builtin_extensions(), env={})
    assert cuda.providers["local"][1].gpu_memory == "80%"  # cuda takes it: a share of the GPU's memory at load


def test_an_agents_resources_apply_to_the_local_providers_it_uses() -> None:
    coder = {"model": {"primary": "other/coder", "fallback": "openai/gpt-4o-mini"}}
    raw = _config(coder={**coder, "resources": {"cpu_threads": 3, "preallocate_memory": True}})
    config = configure(raw, builtin_extensions(), env={})
    other, local = config.providers["other"][1], config.providers["local"][1]
    assert (other.cpu_threads, other.preallocate_memory, other.gpu_memory) == (3, True, "80%")  # + the defaults'
    assert (local.cpu_threads, local.preallocate_memory) == (2, None)  # the defaults' only
    own = _config({"cpu_threads": 1})
    assert configure(own, builtin_extensions(), env={}).providers["local"][1].cpu_threads == 1  # the section wins


def test_resources_that_cannot_apply_are_refused() -> None:
    remote = {"model": {"primary": "openai/gpt-4o-mini"}, "resources": {"cpu_threads": 4}}
    assert _refusals(_config(remote=remote)) == [
        "agents.remote.resources: the agent's chain names no local model (local providers: local, other); resources "
        "apply only to the local deployments an agent uses"
    ]
    first = {"model": {"primary": "other/a"}, "resources": {"cpu_threads": 4}}
    second = {"model": {"primary": "other/b"}, "resources": {"cpu_threads": 1}}
    assert _refusals(_config(first=first, second=second)) == [
        "agents.second.resources.cpu_threads: agents.first gives local provider 'other' cpu_threads 4: a provider's "
        "workers share one setting (set it on models.providers.other)"
    ]
    clash = {"model": {"primary": f"local/{TINY}"}, "resources": {"cpu_threads": 4}}
    assert _refusals(_config({"cpu_threads": 1}, clash=clash)) == [
        "agents.clash.resources.cpu_threads: models.providers.local.cpu_threads is 1: 4 cannot apply to it as well"
    ]


def test_defaults_resources_without_a_local_provider_are_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _config()
    raw["agents"]["defaults"]["model"] = {"primary": "openai/gpt-4o-mini"}
    del raw["models"]["providers"]["local"], raw["models"]["providers"]["other"]
    file = tmp_path / "config.json"
    file.write_text(json.dumps(raw))
    assert main(["config", "check", str(file)]) == 0
    assert "note: agents.defaults.resources: unused: no local (onnxruntime-genai) provider" in capsys.readouterr().out


async def test_preallocate_memory_sizes_each_batchs_kv_cache_up_front(make_provider: Any) -> None:
    provider = await make_provider(preallocate_memory=True, max_context=512)
    assert provider.worker_options.grow_tokens == 512  # a batch's generator gets its whole answer's length at once
    body = await provider.complete(chat("hello", max_tokens=40))
    assert body["usage"]["completion_tokens"] >= 1
    stats = await provider.loaded()[TINY].worker_stats()
    assert stats["regrows"] == 0

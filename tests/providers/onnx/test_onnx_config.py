"""The provider section, its checks and its registration (no model needed)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from minigate.providers.onnx import OnnxProviderConfig, register
from minigate.providers.onnx.config import check_config, parse_size
from minigate.providers.registry import ProviderContext, ProviderRegistry


def test_sizes() -> None:
    assert parse_size("4GiB") == 4 << 30
    assert parse_size("512MB") == 512 * 10**6
    assert parse_size("1.5g") == 1_500_000_000
    assert parse_size("1024") == 1024
    assert parse_size(None) is None
    with pytest.raises(ValueError):
        parse_size("lots")


def test_config_checks_and_unknown_fields() -> None:
    assert check_config(OnnxProviderConfig()) == []
    bad = OnnxProviderConfig(execution_provider="tpu", max_batch_size=0, idle_ttl=0, gpu_memory="x")
    assert {name for name, _ in check_config(bad)} == {"execution_provider", "max_batch_size", "idle_ttl", "gpu_memory"}
    with pytest.raises(msgspec.ValidationError, match="modelsdir"):
        msgspec.convert({"type": "onnxruntime-genai", "modelsdir": "x"}, OnnxProviderConfig)


def test_registered_factory_uses_the_gateway_context(tmp_path: Path) -> None:
    registry = ProviderRegistry()
    register(registry)
    kind = registry.get("onnxruntime-genai")
    assert kind is not None and registry.get("onnx") is kind
    config = msgspec.convert({"type": "onnxruntime-genai", "models_dir": "m"}, kind.config_type)
    context = ProviderContext(base_dir=tmp_path, data_dir=tmp_path / "data", cpu_threads=3, gpu_memory="2GiB")
    provider = kind.factory("local", config, context)
    assert provider.type_name == "onnxruntime-genai"
    assert provider.models_dir == tmp_path / "m"  # type: ignore[attr-defined]
    assert provider.worker_options.cpu_threads == 3  # type: ignore[attr-defined]
    assert provider.worker_options.gpu_memory_bytes == 2 << 30  # type: ignore[attr-defined]
    assert provider.models() == []

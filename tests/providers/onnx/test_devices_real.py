"""The real OpenVINO plugin package (``onnxruntime-ep-openvino``, in the test lock on x86_64): it registers,
``minigate devices`` lists what it offers, ``auto`` answers "Paris" (on the CPU on a machine where no plugin offers
a GPU or NPU) and says why, and ``openvino`` without a device is a clear error, never a traceback.

Skipped where the package is not installed, except under CI=true, where it must be.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from minigate.providers.base import ProviderError
from minigate.providers.onnx.devices import Probe, run_probe
from tests.gateway_server import ADMIN_KEY, GatewayServer
from tests.providers.onnx.helpers import chat

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def probe() -> Probe:
    """The device probe of this machine, with the OpenVINO plugin installed (else the module is skipped)."""
    found = run_probe()
    if found.plugin("openvino") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("onnxruntime-ep-openvino is in the test lock but not installed")
        pytest.skip("onnxruntime-ep-openvino is not installed")
    return found


def _accelerated(probe: Probe) -> bool:
    return any(d.type in ("GPU", "NPU") for d in probe.devices if d.plugin) or any(probe.builtin.values())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minigate.gateway.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_the_openvino_plugin_registers_and_devices_lists_it(probe: Probe) -> None:
    plugin = probe.plugin("openvino")
    assert plugin is not None and plugin.registered and plugin.error is None
    assert plugin.ep_names == ["OpenVINOExecutionProvider"] and plugin.library and Path(plugin.library).is_file()
    listed = _cli("devices")
    assert listed.returncode == 0, listed.stderr
    assert f"  {plugin.label}: execution_provider 'openvino', registered, offers: " in listed.stdout
    assert "devices:\n  CPU (CPUExecutionProvider" in listed.stdout
    assert "auto would choose: " in listed.stdout and "Traceback" not in listed.stderr


def test_openvino_without_a_device_is_a_clear_error(probe: Probe, tmp_path: Path) -> None:
    config = {
        "agents": {"defaults": {"model": {"primary": f"local/{MODEL}"}}},
        "models": {"providers": {"local": {"type": "onnxruntime-genai", "execution_provider": "openvino"}}},
    }
    file = tmp_path / "config.json"
    file.write_text(json.dumps(config))
    message = 'models.providers.local.device: execution_provider \'openvino\' needs a device: "CPU", "GPU" or "NPU"'
    for args in (("config", "check", str(file)), ("serve", "--no-pull", "--config", str(file))):
        result = _cli(*args)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


async def test_a_device_the_plugin_does_not_offer_is_a_load_error_naming_it(probe: Probe, models_dir: Path) -> None:
    from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    plugin = probe.plugin("openvino")
    assert plugin is not None
    missing = next((t for t in ("NPU", "GPU", "CPU") if t not in {d.type for d in probe.offered(plugin)}), None)
    if missing is None:
        pytest.skip("the OpenVINO plugin offers every device type here")
    config = OnnxProviderConfig(models_dir=str(models_dir), execution_provider="openvino", device=missing)
    provider = OnnxProvider("local", config)
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(chat("hello", max_tokens=2))
        assert caught.value.status == 500 and caught.value.code == "model_load_failed"
        assert f"{plugin.label} offers no {missing} device on this machine" in str(caught.value)
    finally:
        await provider.close()


async def test_the_worker_registers_the_plugin_and_appends_its_provider(probe: Probe, models_dir: Path) -> None:
    """The worker's side, past the gateway's checks: it registers the plugin's library and asks onnxruntime-genai
    for OpenVINO on the device; where the plugin offers no such device the load fails with onnxruntime-genai's
    own words about OpenVINO (the gateway's check names the device before it gets this far)."""
    from minigate.providers.onnx.worker import WorkerClient, WorkerOptions

    plugin = probe.plugin("openvino")
    assert plugin is not None
    device = next((d.type for d in probe.offered(plugin)), "CPU")
    choice = {"backend": "openvino", "device": device, "ep": plugin.ep_names[0], "library": plugin.library}
    client = WorkerClient(
        "tiny", models_dir / "tiny", WorkerOptions(execution_provider="openvino", device_choice=choice)
    )
    try:
        await client.start()
    except ProviderError as exc:
        assert not probe.offered(plugin), exc  # it fails only where the plugin offers no device
        assert "OpenVINO" in str(exc) and "cannot be loaded" in str(exc)
    else:
        assert probe.offered(plugin)  # an Intel machine: the tiny model loads on the plugin's device
    finally:
        await client.stop()


def test_auto_answers_paris_and_says_where_and_why(
    probe: Probe,
    gateway_factory: Callable[..., GatewayServer],
    default_models_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="minigate")
    local = {"type": "onnxruntime-genai", "models_dir": str(default_models_dir), "execution_provider": "auto"}
    config: dict[str, Any] = {
        "agents": {"defaults": {"model": {"primary": f"local/{MODEL}"}}},
        "models": {"providers": {"local": {**local, "idle_ttl": None, "max_context": 512}}},
    }
    gateway = gateway_factory(config)
    question: Any = [{"role": "user", "content": "What is the capital of France?"}]
    answer = gateway.client().chat.completions.create(model="default", messages=question, max_tokens=30, temperature=0)
    assert "Paris" in (answer.choices[0].message.content or "")
    said = [r.getMessage() for r in caplog.records if "local models run on" in r.getMessage()]
    assert len(said) == 1, said
    models = httpx.get(f"{gateway.url}/models", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
    card = next(m for m in models["data"] if m["id"] == f"local/{MODEL}")
    if _accelerated(probe):  # a machine with a GPU or NPU: auto takes it, and says which
        assert card["minigate"]["device"] in ("GPU", "NPU") and "preferred over" in said[0]
        return
    assert said[0].startswith("local: local models run on cpu (auto: no installed plugin offers a GPU or NPU (")
    assert f"{probe.plugin('openvino').label}: " in said[0]  # type: ignore[union-attr]
    assert (card["minigate"]["execution_provider"], card["minigate"]["device"]) == ("cpu", "CPU")

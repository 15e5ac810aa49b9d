"""Which back end and device a provider's models run on, and why: ``execution_provider`` and ``device`` against
what the device probe found (:mod:`minigate.providers.onnx.devices`); and how a worker sets it up.

``auto`` takes an NPU over a GPU over the CPU. A plugin's CPU device never wins over onnxruntime's own CPU
execution provider, which runs the int4 models minigate converts.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from minigate.providers.onnx.config import gpu_memory_spec
from minigate.providers.onnx.devices import (
    DEVICE_TYPES,
    KNOWN_PLUGINS,
    Device,
    Plugin,
    Probe,
    normalize,
)

__all__ = [
    "BUILTIN",
    "Choice",
    "DeviceError",
    "choose",
    "configure_engine",
    "describe_devices",
    "package_for",
    "report",
]

BUILTIN = ("cpu", "cuda", "dml")  # back ends onnxruntime-genai's own build brings
_RANK = {"NPU": 2, "GPU": 1, "CPU": 0}
# onnxruntime-genai's names of the providers it knows (its session_options.cpp); any other plugin is appended
# under its EP name.
_GENAI_TAGS = {
    "OpenVINOExecutionProvider": "OpenVINO",
    "WebGpuExecutionProvider": "WebGPU",
    "NvTensorRtRtxExecutionProvider": "NvTensorRtRtx",
    "QNNExecutionProvider": "QNN",
    "VitisAIExecutionProvider": "VitisAI",
    "RyzenAIExecutionProvider": "RyzenAI",
}


class DeviceError(Exception):
    """The configured back end or device cannot be had here; the message says what to install or change."""


class Choice(msgspec.Struct, kw_only=True):
    """Where a provider's models run: the back end, the device type, the plugin library to register, and why."""

    backend: str  # "cpu", "cuda", "dml", "openvino"...
    device: str  # "CPU", "GPU", "NPU"
    reason: str
    ep: str | None = None  # a plugin's execution provider name, registered in the worker before the model loads
    library: str | None = None
    package: str | None = None  # "onnxruntime-ep-openvino 1.8.1"
    gpu_memory_bytes: int | None = None
    notes: list[str] = msgspec.field(default_factory=list)

    @property
    def label(self) -> str:
        """``openvino NPU`` or ``cpu``."""
        return self.backend if self.backend in BUILTIN else f"{self.backend} {self.device}"

    def options(self) -> dict[str, Any]:
        """What the worker needs (:func:`configure_engine`), as JSON-friendly values."""
        return {"backend": self.backend, "device": self.device, "ep": self.ep, "library": self.library}


def package_for(name: str) -> str:
    """The pip package that brings the back end ``name``."""
    return KNOWN_PLUGINS.get(normalize(name), f"onnxruntime-ep-{name.lower()}")


def _describe(devices: list[Device]) -> str:
    return ", ".join(f"{d.type} ({d.ep}{', ' + d.vendor if d.vendor else ''})" for d in devices) or "no device"


def _plugin_device(name: str, wanted: str, probe: Probe) -> tuple[Plugin, Device]:
    plugin = probe.plugin(name)
    if plugin is None:
        package = package_for(name)
        raise DeviceError(
            f"execution_provider {name!r} needs the {package} package, which is not installed: pip install {package}"
        )
    if plugin.error is not None:
        raise DeviceError(f"{plugin.label} cannot be used: {plugin.error}")
    offered = probe.offered(plugin)
    found = [d for d in offered if d.type == wanted]
    if not found:
        raise DeviceError(
            f"{plugin.label} offers no {wanted} device on this machine (it offers: "
            f"{', '.join(sorted({d.type for d in offered})) or 'no device'}; devices here: {_describe(probe.devices)})"
        )
    return plugin, found[0]


def _auto(wanted: str | None, probe: Probe) -> Choice:
    candidates: list[tuple[int, int, Choice]] = []
    for order, plugin in enumerate(probe.plugins):
        if plugin.error is not None:
            continue
        for device in probe.offered(plugin):
            if device.type in ("GPU", "NPU") and wanted in (None, device.type):
                why = f"{plugin.label} offers a{'n' if device.type == 'NPU' else ''} {device.type}"
                vendor = f" ({device.vendor})" if device.vendor else ""
                choice = Choice(
                    backend=plugin.name,
                    device=device.type,
                    reason=f"auto: {why}{vendor}, preferred over {'a GPU and ' if device.type == 'NPU' else ''}the CPU",
                    ep=device.ep,
                    library=plugin.library,
                    package=plugin.label,
                )
                candidates.append((_RANK[device.type], -order, choice))
    for order, name in enumerate(("cuda", "dml")):
        if probe.builtin.get(name) and wanted in (None, "GPU"):
            reason = f"auto: onnxruntime-genai's {name} back end is available, preferred over the CPU"
            candidates.append((_RANK["GPU"], -100 - order, Choice(backend=name, device="GPU", reason=reason)))
    if candidates:
        return max(candidates, key=lambda c: (c[0], c[1]))[2]
    if wanted in ("GPU", "NPU"):
        raise DeviceError(f"execution_provider 'auto' found no {wanted} here (devices: {_describe(probe.devices)})")
    states = [
        f"{p.label}: {p.error or ', '.join(sorted({d.type for d in probe.offered(p)})) or 'no device'}"
        for p in probe.plugins
    ]
    if probe.error:
        why = probe.error
    elif states:
        why = f"no installed plugin offers a GPU or NPU ({'; '.join(states)})"
    else:
        package = KNOWN_PLUGINS["openvino"]
        why = f"no plugin execution provider is installed (for Intel GPUs and NPUs: pip install {package})"
    return Choice(backend="cpu", device="CPU", reason=f"auto: {why}; onnxruntime's CPU execution provider")


def _resolve_memory(choice: Choice, gpu_memory: str | int | None, probe: Probe) -> Choice:
    spec = gpu_memory_spec(gpu_memory)
    if spec is None:
        return choice
    if choice.device == "CPU":
        choice.notes.append(f"gpu_memory {gpu_memory!r} is unused: the models run on the CPU")
    elif choice.backend != "cuda":
        choice.notes.append(f"gpu_memory {gpu_memory!r} is unused: {choice.label} takes no GPU memory limit")
    elif spec[0] == "bytes":
        choice.gpu_memory_bytes = int(spec[1])
    elif probe.gpu_memory_bytes is None:
        raise DeviceError(
            f"gpu_memory {gpu_memory!r} needs the GPU's memory size, which nvidia-smi did not tell: give a size "
            f'such as "6GiB" instead'
        )
    else:
        choice.gpu_memory_bytes = int(probe.gpu_memory_bytes * spec[1] / 100)
        choice.notes.append(
            f"gpu_memory {gpu_memory!r} of the GPU's {probe.gpu_memory_bytes >> 20} MiB: "
            f"gpu_mem_limit {choice.gpu_memory_bytes >> 20} MiB"
        )
    return choice


def choose(execution_provider: str, device: str | None, probe: Probe, gpu_memory: str | int | None = None) -> Choice:
    """The back end and device for a provider section's values (raises :class:`DeviceError` with what to do)."""
    wanted = device.upper() if device else None
    if wanted is not None and wanted not in DEVICE_TYPES:
        raise DeviceError(f"device must be one of {', '.join(DEVICE_TYPES)}, not {device!r}")
    name = normalize(execution_provider)
    if name == "auto":
        choice = _auto(wanted, probe)
    elif name in BUILTIN:
        device_type = "CPU" if name == "cpu" else "GPU"
        choice = Choice(backend=name, device=device_type, reason=f"execution_provider {name!r} in the config")
    else:
        if wanted is None:
            raise DeviceError(
                f'execution_provider {execution_provider!r} needs a device: "CPU", "GPU" or "NPU" '
                f'(or execution_provider "auto")'
            )
        if probe.error:
            raise DeviceError(probe.error)
        plugin, found = _plugin_device(execution_provider, wanted, probe)
        choice = Choice(
            backend=plugin.name,
            device=wanted,
            reason=f"execution_provider {execution_provider!r} and device {wanted!r} in the config",
            ep=found.ep,
            library=plugin.library,
            package=plugin.label,
        )
    return _resolve_memory(choice, gpu_memory, probe)


def configure_engine(og: Any, config: Any, options: dict[str, Any]) -> bool:
    """In the worker, before the model is created: register a chosen plugin's library and append its provider
    for the chosen device type. False when ``options`` name no plugin (the built-in back ends are set elsewhere)."""
    choice = options.get("device_choice") or {}
    if not choice.get("ep"):
        return False
    ep = str(choice["ep"])
    og.register_execution_provider_library(ep, str(choice["library"]))
    tag = _GENAI_TAGS.get(ep, ep)
    config.clear_providers()
    config.append_provider(tag)
    filtering = {"device_filtering_options": {"hardware_device_type": str(choice["device"])}}
    overlay = {"model": {"decoder": {"session_options": {"provider_options": [{tag: filtering}]}}}}
    config.overlay(json.dumps(overlay))
    return True


def report(probe: Probe) -> list[str]:
    """``minigate devices``: the plugins (registered or why not) and the devices each offers, onnxruntime-genai's
    own GPU back ends, and what ``auto`` would choose."""
    if probe.error:
        return [f"error: {probe.error}"]
    lines = [f"onnxruntime {probe.onnxruntime}", "plugins (onnxruntime-ep-* packages):"]
    for plugin in probe.plugins:
        offered = probe.offered(plugin)
        state = f"error: {plugin.error}" if plugin.error else "registered"
        lines.append(f"  {plugin.label}: execution_provider {plugin.name!r}, {state}, offers: {_describe(offered)}")
    if not probe.plugins:
        lines.append(f"  none installed (for Intel GPUs and NPUs: pip install {KNOWN_PLUGINS['openvino']})")
    lines.append("devices:")
    lines += [f"  {d.type} ({d.ep}{', ' + d.vendor if d.vendor else ''})" for d in probe.devices]
    built = ", ".join(f"{name} {'yes' if ok else 'no'}" for name, ok in sorted(probe.builtin.items()))
    lines.append(f"onnxruntime-genai's own GPU back ends: {built or 'unknown'}")
    auto = _auto(None, probe)
    lines.append(f"auto would choose: {auto.label} ({auto.reason})")
    return lines


def describe_devices(probe: Probe) -> dict[str, Any]:
    """The probe for the models page: ``plugins`` (a line each: package, name, state, devices) and ``devices``."""
    if probe.error:
        return {"plugins": [], "devices": probe.error}
    plugins = [
        f"{p.label} (execution_provider {p.name!r}): "
        f"{'error: ' + p.error if p.error else 'registered, offers ' + _describe(probe.offered(p))}"
        for p in probe.plugins
    ]
    return {"plugins": plugins, "devices": _describe(probe.devices)}

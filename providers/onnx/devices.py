"""onnxruntime's plugin execution providers: the installed ``onnxruntime-ep-*`` packages and the devices they offer.

Finding the packages reads installed distributions only (nothing native loads). Listing devices registers each
plugin's library with onnxruntime, so it runs in a short child process (``python -m
minigate.providers.onnx.devices`` prints a :class:`Probe` as JSON): a plugin's native libraries (OpenVINO's are
50 MB) never load into the gateway, and a plugin that crashes takes only the probe down.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec

__all__ = [
    "DEVICE_TYPES",
    "KNOWN_PLUGINS",
    "Device",
    "Plugin",
    "Probe",
    "find_plugins",
    "installed_distribution",
    "normalize",
    "probe",
    "run_probe",
    "run_probe_async",
]

PREFIX = "onnxruntime-ep-"
DEVICE_TYPES = ("CPU", "GPU", "NPU")
# Plugins a config may name before they are installed, with the package that brings each (so the error can say
# what to install). Installed plugins are found by their distribution name whether listed here or not.
KNOWN_PLUGINS = {
    "openvino": "onnxruntime-ep-openvino",
    "webgpu": "onnxruntime-ep-webgpu",
    "nvtensorrtrtx": "onnxruntime-ep-nv-tensorrt-rtx",
    "migraphx": "onnxruntime-ep-migraphx",
    "mlx": "onnxruntime-ep-mlx",
}
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def normalize(name: str) -> str:
    """A back end's name for matching: lower case, no separators, no ``ExecutionProvider`` suffix."""
    flat = re.sub(r"[-_. ]", "", name.lower())
    return flat.removesuffix("executionprovider")


class Plugin(msgspec.Struct, kw_only=True):
    """An installed ``onnxruntime-ep-*`` package: the execution providers it brings and its library."""

    distribution: str
    version: str
    name: str  # what ``execution_provider`` calls it: "openvino"
    ep_names: list[str] = msgspec.field(default_factory=list)  # "OpenVINOExecutionProvider"
    library: str | None = None
    registered: bool = False  # its library registered with onnxruntime (in the probe)
    error: str | None = None  # why it cannot be used (no library, registration failed)

    @property
    def label(self) -> str:
        """``onnxruntime-ep-openvino 1.8.1``."""
        return f"{self.distribution} {self.version}"


class Device(msgspec.Struct, kw_only=True):
    """A device an execution provider offers: ``type`` CPU, GPU or NPU."""

    ep: str  # "CPUExecutionProvider", "OpenVINOExecutionProvider"
    type: str
    vendor: str = ""
    vendor_id: int = 0
    device_id: int = 0
    plugin: str | None = None  # the Plugin.name bringing it; None for onnxruntime's own


class Probe(msgspec.Struct, kw_only=True):
    """What the probe found: plugins (registered or why not), devices, onnxruntime's built-in GPU back ends."""

    onnxruntime: str = ""
    plugins: list[Plugin] = msgspec.field(default_factory=list)
    devices: list[Device] = msgspec.field(default_factory=list)
    builtin: dict[str, bool] = msgspec.field(default_factory=dict)  # {"cuda": False, "dml": False}
    gpu_memory_bytes: int | None = None  # the first NVIDIA GPU's memory (nvidia-smi), for "80%" on cuda
    error: str | None = None  # the probe itself failed

    def offered(self, plugin: Plugin) -> list[Device]:
        """The devices ``plugin`` offers."""
        return [d for d in self.devices if d.ep in plugin.ep_names]

    def plugin(self, name: str) -> Plugin | None:
        """The installed plugin called ``name`` (any spelling: OpenVINO, openvino...)."""
        wanted = normalize(name)
        return next((p for p in self.plugins if p.name == wanted), None)


def _distributions() -> list[importlib.metadata.Distribution]:
    found: dict[str, importlib.metadata.Distribution] = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith(PREFIX) and name not in found:
            found[name] = dist
    return [found[n] for n in sorted(found)]


def installed_distribution(name: str) -> str | None:
    """The installed ``onnxruntime-ep-*`` distribution that brings the back end ``name``, without importing it."""
    wanted = normalize(name)
    for dist in _distributions():
        if normalize(dist.metadata["Name"].lower().replace("_", "-").removeprefix(PREFIX)).startswith(wanted):
            return str(dist.metadata["Name"])
    return None


def _modules(dist: importlib.metadata.Distribution) -> list[str]:
    top = (dist.read_text("top_level.txt") or "").split()
    return top or [dist.metadata["Name"].replace("-", "_").lower()]


def find_plugins() -> list[Plugin]:
    """The installed ``onnxruntime-ep-*`` packages; each one's Python module tells its library path and EP names
    (``get_library_path()``, ``get_ep_names()``): pure Python, nothing native loads here."""
    plugins = []
    for dist in _distributions():
        dist_name = str(dist.metadata["Name"])
        plugin = Plugin(distribution=dist_name, version=dist.version, name="")
        for module_name in _modules(dist):
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                plugin.error = f"cannot import {module_name}: {exc}"
                continue
            get_path = getattr(module, "get_library_path", None)
            if get_path is None:
                plugin.error = f"{module_name} has no get_library_path()"
                continue
            try:
                plugin.library = str(get_path())
                names = getattr(module, "get_ep_names", None)
                plugin.ep_names = [str(n) for n in names()] if names else [str(module.get_ep_name())]
                plugin.error = None
            except Exception as exc:  # third-party code: whatever it raises makes the plugin unusable, not minigate
                plugin.error = f"{module_name}: {type(exc).__name__}: {exc}"
            break
        suffix = dist_name.lower().replace("_", "-").removeprefix(PREFIX)
        plugin.name = normalize(plugin.ep_names[0]) if plugin.ep_names else normalize(suffix)
        plugins.append(plugin)
    return plugins


def _nvidia_memory() -> int | None:
    """The first NVIDIA GPU's memory in bytes, from nvidia-smi; None without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return int(out.split()[0]) << 20  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def probe() -> Probe:
    """Register every installed plugin with onnxruntime and list the devices offered (loads native code: run it
    in a child process, see :func:`run_probe`)."""
    import onnxruntime as ort

    result = Probe(onnxruntime=str(ort.__version__), plugins=find_plugins(), gpu_memory_bytes=_nvidia_memory())
    owner: dict[str, str] = {}
    for plugin in result.plugins:
        if plugin.library is None:
            continue
        try:
            ort.register_execution_provider_library(plugin.ep_names[0], plugin.library)
        except Exception as exc:  # the plugin's native registration: its failure is the plugin's state
            plugin.error = f"registration failed: {exc}"
            continue
        plugin.registered = True
        owner.update(dict.fromkeys(plugin.ep_names, plugin.name))
    for ep_device in ort.get_ep_devices():
        hardware = ep_device.device
        result.devices.append(
            Device(
                ep=str(ep_device.ep_name),
                type=str(hardware.type.name),
                vendor=str(hardware.vendor),
                vendor_id=int(hardware.vendor_id),
                device_id=int(hardware.device_id),
                plugin=owner.get(str(ep_device.ep_name)),
            )
        )
    try:
        import onnxruntime_genai as og

        result.builtin = {"cuda": bool(og.is_cuda_available()), "dml": bool(og.is_dml_available())}
    except ImportError:
        result.builtin = {"cuda": False, "dml": False}
    return result


def _command() -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return [sys.executable, "-m", "minigate.providers.onnx.devices"], env


def _decode(code: int, out: bytes, err: bytes) -> Probe:
    if code == 0:
        try:
            return msgspec.json.decode(out, type=Probe)
        except msgspec.DecodeError:
            pass
    tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
    return Probe(error=f"the device probe failed (exit code {code}): {' | '.join(tail) or 'no output'}")


def run_probe(timeout: float = 60.0) -> Probe:
    """:func:`probe` in a child process (for the command line)."""
    cmd, env = _command()
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return Probe(error=f"the device probe did not finish in {timeout:.0f} s")
    return _decode(done.returncode, done.stdout, done.stderr)


async def run_probe_async(limit: float = 60.0) -> Probe:
    """:func:`probe` in a child process, without blocking the event loop (``limit``: seconds it may take)."""
    cmd, env = _command()
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Probe(error=f"the device probe did not finish in {limit:.0f} s")
    return _decode(proc.returncode or 0, out, err)


if __name__ == "__main__":
    # Native code printing to fd 1 would corrupt the JSON: keep stdout for the answer.
    out_fd = os.dup(1)
    os.dup2(2, 1)
    os.write(out_fd, msgspec.json.encode(probe()))
    sys.exit(0)

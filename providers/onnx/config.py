"""The ``onnxruntime-genai`` provider section and its checks."""

from __future__ import annotations

import os
import re

import msgspec

from minigate.providers.onnx.devices import DEVICE_TYPES, KNOWN_PLUGINS, installed_distribution, normalize

__all__ = [
    "EXECUTION_PROVIDERS",
    "OnnxProviderConfig",
    "check_backend",
    "check_config",
    "config_notes",
    "gpu_memory_spec",
    "parse_budget",
    "parse_size",
]

EXECUTION_PROVIDERS = ("cpu", "cuda", "dml", "auto")  # and the plugins' names: see check_backend
_BUILTIN = ("cpu", "cuda", "dml")


class OnnxProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An ``onnxruntime-genai`` provider section.

    ``memory_budget`` and ``gpu_memory`` take sizes like ``"6GiB"`` or ``"512MB"``; ``idle_ttl`` is seconds
    (None: never unload); ``cpu_threads`` None lets onnxruntime choose. ``default_max_tokens`` caps an answer
    whose request gives no ``max_tokens``, for models whose ``generation_config.json`` names no ``max_new_tokens``.
    ``execution_provider`` is cpu, cuda, dml, an installed plugin's name (openvino, webgpu...: ``device`` CPU, GPU or
    NPU says which of its devices) or auto; ``gpu_memory`` may be ``"80%"`` of the device's memory.
    ``preallocate_memory`` sizes each batch's KV cache for its whole answer up front.
    """

    type: str = "onnxruntime-genai"
    models_dir: str = "./models"
    execution_provider: str = "cpu"
    max_batch_size: int = 8
    max_context: int = 2048
    default_max_tokens: int = 1024
    queue_size: int = 64
    idle_ttl: float | None = 900
    memory_budget: str | None = None
    cpu_threads: int | None = None
    gpu_memory: str | int | None = None
    device: str | None = None
    preallocate_memory: bool | None = None
    # Which precision a model reference without "@" gets: None the plain folder, "auto" the smaller one under
    # load (precision_busy_at requests in flight or more) and the better one when idle, or a precision.
    precision: str | None = None
    precision_busy_at: int = 2
    # KV caches of recent sequences kept for reuse by a next request with the same start, per loaded model:
    # a size ("1GiB"), "N%" of the machine's memory, or "off" (docs/architecture.md, "Local models").
    prefix_cache: str | int | None = "1GiB"
    # What a cached sequence offers a next turn: "exact" only keys and values a prefill computed (answers never
    # change; the last answer is prefilled again), "generated" also its answer's decode steps' (faster back to back,
    # but an answer may differ from the one without the cache in its last bits, and so in its tokens).
    prefix_reuse: str = "exact"


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_size(text: str | int | None) -> int | None:
    """Bytes in ``"6GiB"``, ``"512MB"``, ``"2g"`` or a plain number; None stays None."""
    if text is None or isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (try 4GiB or 512MB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_budget(text: str | int | None, total_memory: int | None = None) -> int:
    """Bytes in a ``prefix_cache`` option: a size (``"1GiB"``, bytes), ``"N%"`` of the machine's memory
    (``total_memory``, else what the system says), or ``0`` / ``"off"`` / None for none."""
    if text is None or (isinstance(text, str) and text.strip().lower() in ("off", "none", "")):
        return 0
    if isinstance(text, str) and (match := re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*", text)):
        if float(match.group(1)) > 100:
            raise ValueError(f"not a share of memory: {text!r} (at most 100%)")
        if total_memory is None:
            total_memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return int(float(match.group(1)) / 100 * total_memory)
    return max(0, parse_size(text) or 0)


def gpu_memory_spec(value: str | int | None) -> tuple[str, float] | None:
    """``("percent", 80.0)`` for ``"80%"``, ``("bytes", n)`` for a size; None for None; ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, str) and (m := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)):
        percent = float(m.group(1))
        if not 0 < percent <= 100:
            raise ValueError(f"not a percentage between 0% and 100%: {value!r}")
        return ("percent", percent)
    size = parse_size(value)
    if not size or size <= 0:
        raise ValueError(f"must be a positive size: {value!r}")
    return ("bytes", float(size))


def check_backend(execution_provider: str, device: str | None, gpu_memory: str | int | None) -> list[tuple[str, str]]:
    """``(field, problem)`` for what can be known without loading anything: the name, a plugin's package
    installed (its distribution, not its library), the device option, and a ``gpu_memory`` the back end ignores."""
    problems: list[tuple[str, str]] = []
    name = normalize(execution_provider)
    plugin = name not in EXECUTION_PROVIDERS
    wanted = device.upper() if device else None
    if plugin and installed_distribution(name) is None:
        if name in KNOWN_PLUGINS:
            package = KNOWN_PLUGINS[name]
            message = f"{execution_provider!r} needs the {package} package, not installed: pip install {package}"
        else:
            message = (
                f"must be cpu, cuda, dml, auto or an installed plugin's name (plugins: {', '.join(KNOWN_PLUGINS)}); "
                f"no onnxruntime-ep-* package installed brings {execution_provider!r}"
            )
        problems.append(("execution_provider", message))
    if wanted is not None and wanted not in DEVICE_TYPES:
        problems.append(("device", f"must be one of {', '.join(DEVICE_TYPES)}, not {device!r}"))
    elif wanted is not None and name in _BUILTIN:
        problems.append(("device", f"only for plugin back ends and auto; {name} chooses its device itself"))
    elif wanted is None and plugin and not problems:
        problems.append(
            (
                "device",
                f'execution_provider {execution_provider!r} needs a device: "CPU", "GPU" or "NPU" '
                f'(or execution_provider "auto")',
            )
        )
    try:
        spec = gpu_memory_spec(gpu_memory)
    except ValueError as exc:
        problems.append(("gpu_memory", str(exc)))
        spec = None
    if spec is not None and (name == "dml" or (plugin and wanted in ("GPU", "NPU"))):
        label = name if name == "dml" else f"{name} on a{'n' if wanted == 'NPU' else ''} {wanted}"
        problems.append(
            ("gpu_memory", f"{label} cannot honour a GPU memory limit (only cuda takes one): remove gpu_memory")
        )
    return problems


def check_config(config: OnnxProviderConfig) -> list[tuple[str, str]]:
    """``(field, problem)`` pairs for values the types cannot rule out."""
    problems = check_backend(config.execution_provider, config.device, config.gpu_memory)
    for name in ("max_batch_size", "max_context", "default_max_tokens", "cpu_threads"):
        value = getattr(config, name)
        if value is not None and value < 1:
            problems.append((name, "must be at least 1"))
    if config.precision is not None and config.precision not in ("auto", "int4", "int8", "fp16", "fp32"):
        problems.append(("precision", "must be auto, int4, int8, fp16 or fp32"))
    if config.precision_busy_at < 1:
        problems.append(("precision_busy_at", "must be at least 1"))
    if config.queue_size < 0:
        problems.append(("queue_size", "must not be negative"))
    if config.idle_ttl is not None and config.idle_ttl <= 0:
        problems.append(("idle_ttl", "must be positive (or null: never unload)"))
    try:
        parse_size(config.memory_budget)
    except ValueError as exc:
        problems.append(("memory_budget", str(exc)))
    try:
        parse_budget(config.prefix_cache)
    except ValueError as exc:
        problems.append(("prefix_cache", str(exc)))
    if config.prefix_reuse not in ("exact", "generated"):
        problems.append(("prefix_reuse", f"must be exact or generated, not {config.prefix_reuse!r}"))
    return problems


def config_notes(config: OnnxProviderConfig) -> list[tuple[str, str]]:
    """``(field, note)`` for accepted values that will have no effect (``config check`` prints them)."""
    backend = config.execution_provider.lower()
    if config.gpu_memory is not None and (backend == "cpu" or (config.device or "").upper() == "CPU"):
        return [("gpu_memory", "unused: the models run on the CPU")]
    return []

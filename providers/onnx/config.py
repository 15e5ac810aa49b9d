"""The ``onnxruntime-genai`` provider section and its checks."""

from __future__ import annotations

import os
import re

import msgspec

__all__ = ["EXECUTION_PROVIDERS", "OnnxProviderConfig", "check_config", "parse_budget", "parse_size"]

EXECUTION_PROVIDERS = ("cpu", "cuda", "dml")


class OnnxProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An ``onnxruntime-genai`` provider section.

    ``memory_budget`` and ``gpu_memory`` take sizes like ``"6GiB"`` or ``"512MB"``; ``idle_ttl`` is seconds
    (None: never unload); ``cpu_threads`` None lets onnxruntime choose. ``default_max_tokens`` caps an answer
    whose request gives no ``max_tokens``, for models whose ``generation_config.json`` names no ``max_new_tokens``.
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
    gpu_memory: str | None = None
    # KV caches of recent sequences kept for reuse by a next request with the same start, per loaded model:
    # a size ("1GiB"), "N%" of the machine's memory, or "off" (docs/architecture.md, "Local models").
    prefix_cache: str | int | None = "1GiB"
    # Which precision a model reference without "@" gets: None the plain folder, "auto" the smaller one under
    # load (precision_busy_at requests in flight or more) and the better one when idle, or a precision.
    precision: str | None = None
    precision_busy_at: int = 2


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


def check_config(config: OnnxProviderConfig) -> list[tuple[str, str]]:
    """``(field, problem)`` pairs for values the types cannot rule out."""
    problems = []
    if config.execution_provider not in EXECUTION_PROVIDERS:
        problems.append(("execution_provider", f"must be one of {', '.join(EXECUTION_PROVIDERS)}"))
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
    for name in ("memory_budget", "gpu_memory"):
        try:
            parse_size(getattr(config, name))
        except ValueError as exc:
            problems.append((name, str(exc)))
    try:
        parse_budget(config.prefix_cache)
    except ValueError as exc:
        problems.append(("prefix_cache", str(exc)))
    return problems

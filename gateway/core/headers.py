"""Header values from text that is not the gateway's own (model and provider names from a config).

:func:`header_value` percent-encodes, as UTF-8, everything outside printable ASCII and ``%``: Litestar fails on
a non-Latin-1 value, and uvicorn drops a response with CR, LF or NUL in a header.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["header_value", "header_values"]

# Printable ASCII but "%": kept as they are (quote's own safe set, widened).
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(text: str) -> str:
    """``text`` safe to send as a header value: percent-encoded where it is not printable ASCII."""
    if text.isascii() and text.isprintable() and "%" not in text and text.strip(" ") == text:
        return text
    value = quote(text, safe=_SAFE, errors="surrogatepass")
    core = value.strip(" ")  # a parser would drop spaces at the ends of a value
    start = value.index(core) if core else len(value)
    return "%20" * start + core + "%20" * (len(value) - start - len(core))


def header_values(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with every value made safe by :func:`header_value`."""
    return {name: header_value(value) for name, value in headers.items()}

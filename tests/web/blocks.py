"""A streaming answer's updates (``block_update`` in web/chat_stream.py) applied to its body the way app.js's
"blocks" swap applies them, on the HTML text: the body's first K top-level elements kept, the rest replaced."""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["UPDATE", "apply_update", "bodies", "top_level"]

UPDATE = re.compile(r'<hx-partial hx-target="#msg-(\d+)-text" hx-swap="blocks keep:(\d+)">(.*)</hx-partial>', re.S)
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TopLevel(HTMLParser):
    """Where each top-level element of a fragment starts (offsets into it), and text outside any element."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=False)
        self.lines = [0]
        self.lines += [i + 1 for i, c in enumerate(html) if c == "\n"]
        self.depth = 0
        self.starts: list[int] = []
        self.loose = ""  # top-level text that is not whitespace: no element holds it
        self.feed(html)
        self.close()

    def _offset(self) -> int:
        line, column = self.getpos()
        return self.lines[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth == 0:
            self.starts.append(self._offset())
        if tag not in _VOID:
            self.depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth == 0:
            self.starts.append(self._offset())

    def handle_endtag(self, tag: str) -> None:
        self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth == 0:
            self.loose += data.strip()


def top_level(html: str) -> list[str]:
    """``html`` cut before each top-level element: a piece per element, with the whitespace after it."""
    parsed = _TopLevel(html)
    assert parsed.depth == 0 and not parsed.loose, f"not a run of whole elements: {html!r}"
    assert not html[: parsed.starts[0] if parsed.starts else len(html)].strip(), html
    ends = [*parsed.starts[1:], len(html)]
    return [html[start:end] for start, end in zip(parsed.starts, ends, strict=True)]


def apply_update(body: list[str], keep: int, html: str) -> list[str]:
    """The body's top-level elements after an update that keeps ``keep`` of them and adds ``html``'s."""
    assert keep <= len(body), (keep, len(body))
    return body[:keep] + top_level(html)


def bodies(events: list[str], message_id: int) -> list[str]:
    """The answer's body (HTML) after each of ``events`` that updates it, from the first event's empty body on."""
    body: list[str] = []
    seen = []
    for event in events:
        match = UPDATE.fullmatch(event)
        if match is None or int(match[1]) != message_id:
            assert f'"#msg-{message_id}-text"' not in event, event  # an update of the body is nothing else
            continue
        body = apply_update(body, int(match[2]), match[3])
        seen.append("".join(body))
    return seen

"""What the look tests share (issue 15: dark mode, phone, page weight, screenshots): a conversation with code and a
table, contrast ratios computed in the page, PNG blankness, and where screenshots go."""

from __future__ import annotations

import os
import re
import shutil
import struct
import zlib
from pathlib import Path

from playwright.sync_api import Page, expect

__all__ = ["CONTRAST_JS", "RICH", "copy_shots", "distinct_bytes", "rich_conversation"]

# An answer of the echo model repeats this: a code block, a table and a list, like a real answer.
RICH = """Here is the plan:

```python
def greet(name: str) -> str:
    return f"Hello, {name}!"
```

| model | tokens/s | context |
|---|---|---|
| default | 42 | 4096 |
| remote | 88 | 128000 |

- one point with `inline code`
- and a [link](https://example.com)"""

# For each element: its text colour and the background it is drawn on (ancestors' backgrounds blended in),
# and the WCAG contrast ratio between them. `pseudo` reads ::placeholder.
CONTRAST_JS = """([selector, pseudo]) => {
  const parse = (c) => {
    const m = c.match(/[\\d.]+/g).map(Number);
    return [m[0], m[1], m[2], m.length > 3 ? m[3] : 1];
  };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3])).concat([1]);
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  const lum = (c) => 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  const el = document.querySelector(selector);
  if (!el) return null;
  const layers = [];
  for (let node = el; node; node = node.parentElement) layers.push(parse(getComputedStyle(node).backgroundColor));
  let bg = [255, 255, 255, 1];
  for (const layer of layers.reverse()) bg = over(layer, bg);
  const fg = over(parse(getComputedStyle(el, pseudo || null).color), bg);
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  const shown = 'rgb(' + bg.slice(0, 3).map(Math.round).join(',') + ')';
  return {ratio: (a + 0.05) / (b + 0.05), fg: getComputedStyle(el, pseudo || null).color, bg: shown};
}"""


def rich_conversation(tab: Page, content: str = RICH) -> str:
    """Send ``content`` from /chat as a first message, wait for the echoed answer; the conversation's path."""
    tab.goto("/chat")
    tab.get_by_label("Message", exact=True).fill(content)
    tab.get_by_role("button", name="Send", exact=True).click()
    expect(tab.locator(".msg-assistant .md")).to_have_count(1)
    expect(tab.locator("#messages")).to_have_attribute("aria-busy", "false")  # the stream is over: the box is free
    expect(tab).to_have_url(re.compile(r"/chat/\d+$"))
    return re.sub(r"^https?://[^/]+", "", tab.url)


def distinct_bytes(png: bytes) -> int:
    """How many different byte values a PNG's pixel rows hold: a blank screenshot has a handful."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    data, at = b"", 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind = png[at + 4 : at + 8]
        if kind == b"IDAT":
            data += png[at + 8 : at + 8 + length]
        at += 12 + length
    return len(set(zlib.decompress(data)))


def copy_shots(folder: Path, name: str = "look") -> None:
    """Copy the screenshots to /tmp/shots-<name>/ when MINIGATE_SHOTS is set (to look at them)."""
    if os.environ.get("MINIGATE_SHOTS"):
        target = Path(f"/tmp/shots-{name}")
        target.mkdir(parents=True, exist_ok=True)
        for shot in folder.glob("*.png"):
            shutil.copy(shot, target / shot.name)

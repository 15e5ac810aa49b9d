#!/usr/bin/env python
"""Chat render benchmark: the server's CPU cost of rendering a streaming answer again and again as Markdown.

Run from the repository root with the project's venv active (a few seconds)::

    python bench/bench_chat_render.py [--tokens 2000] [--rate 30] [--json results.json]

An answer of about ``--tokens`` tokens (prose, lists and code blocks in Python, JavaScript and a shell session,
a token being about four characters) is fed to the chat's renderer (``MarkdownRenderer(code_tools=True)``:
markdown-it, Pygments, nh3) the way ``web/chat_stream.py`` streams it: tokens arriving at ``--rate`` a second,
the whole answer so far rendered at the first token and then whenever ``RENDER_EVERY`` (80 ms) has passed
(``render_due``, with the real render times feeding its slow-render back-off), and once more at the end.
The arrival clock is simulated, the render times are real. Side by side in one run, on the same arrivals:
"whole", each render sanitised in one piece and the whole answer's HTML sent every time (the stream before block
updates), and "blocks", each render done block by block reusing the last render's sanitised blocks and only the
blocks that changed sent (``block_update``). Reported for each: ms per render at a quarter, half and the whole
answer (warm: the closed code blocks already highlighted, as while streaming; cold: none yet); the renders per
answer, their total CPU time and the bytes sent (the SSE events as encoded, the final event left out: the same
for both); and the old stream, which escaped each token and sent it alone. Nothing is asserted (a benchmark).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from markupsafe import escape
from sse_starlette import ServerSentEvent

from minigate.web.chat_stream import block_update, render_due
from minigate.web.markdown import Blocks, MarkdownRenderer

PROSE = (
    "The function below reads the **configuration** once and keeps it; see `load()` for the details, and the "
    "[documentation](https://example.com/docs) for every option. It handles *missing* files and bad values.\n\n"
)
PYTHON = '''```python
import json
from pathlib import Path


class Config:
    """Settings read once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.values: dict[str, int] = {}

    def load(self) -> dict[str, int]:
        if not self.path.exists():  # a first run
            return {}
        with self.path.open() as f:
            self.values = {k: int(v) for k, v in json.load(f).items()}
        return self.values
```

'''
JS = """```js
export async function fetchAll(urls, limit = 4) {
  const results = [];
  for (let i = 0; i < urls.length; i += limit) {
    const batch = urls.slice(i, i + limit).map((u) => fetch(u).then((r) => r.json()));
    results.push(...(await Promise.all(batch)));
  }
  return results; // in order
}
```

"""
SHELL = "```console\n$ python -m venv .venv && .venv/bin/pip install -e .\n$ minigate serve --port 8080\n```\n\n"
WARM_UP = "```python\nx\n```\n\n```js\nx\n```\n\n```console\n$ x\n```\n"
LIST = (
    "1. Install it.\n2. Write the config:\n   - `port`: where it listens\n   - `models`: what it serves\n3. Run it.\n\n"
)


def answer_of(tokens: int) -> str:
    """About ``tokens`` tokens (4 characters each) of a typical technical answer."""
    blocks, text, i = [PROSE, PYTHON, LIST, JS, PROSE, SHELL], "", 0
    while len(text) < tokens * 4:
        text += blocks[i % len(blocks)]
        i += 1
    return text[: tokens * 4]


def pieces_of(text: str, tokens: int) -> list[str]:
    size = max(1, len(text) // tokens)
    return [text[i : i + size] for i in range(0, len(text), size)]


def whole_step(renderer: MarkdownRenderer) -> Callable[[str], int]:
    """A render as the stream did before block updates: the answer sanitised in one piece and all of it sent."""

    def step(text: str) -> int:
        html = renderer.sanitise(renderer.markup(text))
        event = f'<hx-partial hx-target="#msg-123-text" hx-swap="innerHTML">{html}</hx-partial>'
        return len(ServerSentEvent(data=event).encode())

    return step


def blocks_step(renderer: MarkdownRenderer) -> Callable[[str], int]:
    """A render as the stream does now: block by block, reusing the last render's blocks; the blocks that changed
    sent (0 bytes: no event)."""
    shown = Blocks()

    def step(text: str) -> int:
        nonlocal shown
        rendered = renderer.blocks(text, shown)
        update = block_update(123, shown.html, rendered.html)
        shown = rendered
        return 0 if update is None else len(ServerSentEvent(data=update).encode())

    return step


def stream(pieces: list[str], rate: float, step: Callable[[str], int]) -> tuple[int, float, int]:
    """Renders, CPU seconds and bytes sent for ``pieces`` arriving at ``rate`` a second (clock simulated)."""
    clock, shown_at, cost, renders, cpu, sent = 0.0, None, 0.0, 0, 0.0, 0
    so_far: list[str] = []
    for piece in pieces:
        clock += 1 / rate
        so_far.append(piece)
        if render_due(clock, shown_at, cost):
            t0 = time.perf_counter()
            size = step("".join(so_far))
            cost = time.perf_counter() - t0
            shown_at = clock + cost
            renders, cpu, sent = renders + 1, cpu + cost, sent + size
    return renders, cpu, sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=30.0, help="tokens a second, as a local model streams")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    renderer = MarkdownRenderer(code_tools=True)
    text = answer_of(args.tokens)
    pieces = pieces_of(text, args.tokens)
    renderer.render(text)  # warm-up: lexers looked up, caches filled

    # Cold: a renderer that has highlighted none of these blocks yet (the final render of a stored answer);
    # warm: every closed block already highlighted, as while streaming (only the growing block is lexed again);
    # "blocks" warm also reuses the sanitised blocks of a render 8 characters shorter, as the stream does.
    at: dict[str, dict[str, float]] = {"whole": {}, "blocks": {}}
    cold: dict[str, float] = {}
    for label, frac in (("quarter", 0.25), ("half", 0.5), ("whole", 1.0)):
        part = text[: int(len(text) * frac)]
        before = renderer.blocks(part[:-8])
        runs: dict[str, list[float]] = {"whole": [], "blocks": []}
        first = []
        for _ in range(15):
            fresh = MarkdownRenderer(code_tools=True)
            fresh.render(WARM_UP)  # lexers looked up
            t0 = time.perf_counter()
            fresh.render(part)
            first.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            renderer.sanitise(renderer.markup(part))
            runs["whole"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            renderer.blocks(part, before)
            runs["blocks"].append(time.perf_counter() - t0)
        for way in at:
            at[way][label] = statistics.median(runs[way]) * 1000
        cold[label] = statistics.median(first) * 1000

    # The stream: arrival times simulated at --rate, render times real (they feed render_due's back-off). The two
    # ways alternate three times on the same arrivals; each reports its median run.
    runs_of: dict[str, list[tuple[int, float, int]]] = {"whole": [], "blocks": []}
    for _ in range(3):
        runs_of["whole"].append(stream(pieces, args.rate, whole_step(renderer)))
        runs_of["blocks"].append(stream(pieces, args.rate, blocks_step(renderer)))
    result = {way: sorted(runs, key=lambda run: run[1])[1] for way, runs in runs_of.items()}
    t0 = time.perf_counter()
    final = renderer.render(text)  # the final partial (the same for both ways: not counted in the bytes)
    final_cpu = time.perf_counter() - t0

    t0 = time.perf_counter()
    escaped = sum(len(escape(p)) for p in pieces)
    plain_cpu = time.perf_counter() - t0 + cold["whole"] / 1000  # each token escaped, and the final render

    duration = len(pieces) / args.rate
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    results = {
        "tokens": len(pieces),
        "characters": len(text),
        "rate_tokens_per_s": args.rate,
        "answer_s": round(duration, 1),
        "loadavg": load,
        "ms_per_cold_render": {k: round(v, 2) for k, v in cold.items()},
        "final_render_ms": round(final_cpu * 1000, 2),
        "plain_escaping_cpu_ms": round(plain_cpu * 1000, 1),
        "plain_escaping_bytes_sent": escaped + len(final),
    }
    print(
        f"answer: {len(pieces)} tokens, {len(text):,} characters, streamed at {args.rate:g} tokens/s "
        f"({duration:.0f} s); load average {' '.join(load)}\n"
        f"cold render (nothing highlighted yet): {cold['quarter']:.2f} ms at a quarter, {cold['half']:.2f} ms at "
        f"half, {cold['whole']:.2f} ms whole"
    )
    for way, label in (("whole", "before (whole HTML each render)"), ("blocks", "after (blocks that changed)")):
        renders, cpu, sent = result[way]
        ms = at[way]
        results[way] = {
            "ms_per_render": {k: round(v, 2) for k, v in ms.items()},
            "renders": renders,
            "render_cpu_ms": round(cpu * 1000, 1),
            "render_cpu_share": round(cpu / duration, 4),
            "bytes_sent": sent,
        }
        print(
            f"{label:34} {renders} renders, {cpu * 1000:5.0f} ms CPU ({100 * cpu / duration:.1f}% of a core), "
            f"{sent / 1e6:6.3f} MB sent; a render {ms['quarter']:.2f} ms at a quarter, {ms['half']:.2f} ms at half, "
            f"{ms['whole']:.2f} ms whole"
        )
    print(
        f"old stream (each token escaped, one final render): {plain_cpu * 1000:.0f} ms CPU, "
        f"{(escaped + len(final)) / 1e6:.3f} MB sent"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

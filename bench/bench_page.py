#!/usr/bin/env python
"""Page weight and first paint of the web UI: /chat/<id>, /chat, /models, /usage over N cold loads in chromium.

Run from the repository root with the project's venv active (about 20 s)::

    python bench/bench_page.py [--loads 10] [--json results.json]

``minigate serve`` runs as a subprocess on 127.0.0.1 with a temporary config and data folder; Debian's chromium
(``MINIGATE_CHROMIUM``, default /usr/bin/chromium) logs in, sends one message with a code block and a table, then
loads each page ``--loads`` times, each in a new browser context (an empty cache: a cold load). Reported per page,
as medians: the document's bytes as sent (gzip) and uncompressed, everything transferred (document and every
static file, headers included) against the uncompressed total, first paint and first contentful paint. The issue's
targets are printed beside them (under 100 KB transferred, first paint under 300 ms); nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from procs import Proc, serve_config  # noqa: E402  (bench/ is this script's own folder)

from tests.web.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from tests.web.look import RICH  # noqa: E402

PASSWORD = "bench-password"
WEIGHT_TARGET = 100_000
PAINT_TARGET_MS = 300.0
CONFIG = {
    "agents": {"defaults": {"model": {"primary": "echo/echo"}}},
    "models": {"providers": {"echo": {"type": "fake", "models": ["echo"]}}},
}
KEYS = ("doc_sent", "doc_raw", "sent", "raw", "fp", "fcp")
# Everything the browser measures of one load: the document, each resource, the paint times.
MEASURE = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const paint = Object.fromEntries(performance.getEntriesByType('paint').map(p => [p.name, p.startTime]));
  return {doc_sent: nav.encodedBodySize, doc_raw: nav.decodedBodySize,
          sent: nav.transferSize + res.reduce((n, r) => n + r.transferSize, 0),
          raw: nav.decodedBodySize + res.reduce((n, r) => n + r.decodedBodySize, 0),
          fp: paint['first-paint'] ?? null, fcp: paint['first-contentful-paint'] ?? null};
}"""


def _start(folder: Path) -> tuple[Proc, str]:
    config = {**CONFIG, "server": {"data_dir": str(folder / "data")}}
    return serve_config(config, folder, {"MINIGATE_ADMIN_PASSWORD": PASSWORD})


def _session(browser: Browser, base: str) -> tuple[Any, str]:
    """Log in and start a conversation; the session's storage state and the conversation's path."""
    context = browser.new_context(base_url=base)
    tab = context.new_page()
    tab.goto("/login")
    tab.get_by_label("Password or admin key").fill(PASSWORD)
    tab.get_by_role("button", name="Log in").click()
    tab.wait_for_url("**/chat")
    tab.get_by_label("Message", exact=True).fill(RICH)
    tab.get_by_role("button", name="Send", exact=True).click()
    tab.wait_for_url("**/chat/*")
    tab.locator(".msg-assistant .md table").wait_for()
    path = "/" + tab.url.split("/", 3)[3]
    state = context.storage_state()
    context.close()
    return state, path


def _loads(browser: Browser, base: str, state: Any, path: str, count: int) -> list[dict[str, Any]]:
    found = []
    for _ in range(count):
        context = browser.new_context(base_url=base, storage_state=state)
        tab = context.new_page()
        tab.goto(path)
        tab.wait_for_load_state("load")
        tab.wait_for_timeout(50)  # the paint entries arrive after the first frame
        found.append(tab.evaluate(MEASURE))
        context.close()
    return found


def _median(rows: list[dict[str, Any]], key: str) -> float:
    values = [row[key] for row in rows if row[key] is not None]
    return float(statistics.median(values)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loads", type=int, default=10, help="cold loads per page")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = _start(Path(tmp))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                state, conversation = _session(browser, base)
                pages = [("chat/<id>", conversation), ("chat", "/chat"), ("models", "/models"), ("usage", "/usage")]
                for name, path in pages:
                    rows = _loads(browser, base, state, path, args.loads)
                    figures[name] = {
                        key: _median(rows, key) for key in ("doc_sent", "doc_raw", "sent", "raw", "fp", "fcp")
                    }
                browser.close()
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"\nmedians of {args.loads} cold loads; targets: < {WEIGHT_TARGET // 1000} KB sent, first paint < 300 ms")
    print(f"{'page':<10} {'html gz':>8} {'html raw':>9} {'sent':>8} {'raw':>8} {'FP ms':>7} {'FCP ms':>7}  verdict")
    for name, f in figures.items():
        ok = f["sent"] < WEIGHT_TARGET and f["fp"] < PAINT_TARGET_MS
        print(
            f"{name:<10} {f['doc_sent']:8.0f} {f['doc_raw']:9.0f} {f['sent']:8.0f} {f['raw']:8.0f} "
            f"{f['fp']:7.0f} {f['fcp']:7.0f}  {'PASS' if ok else 'FAIL'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"loads": args.loads, "pages": figures}, indent=2))


if __name__ == "__main__":
    main()

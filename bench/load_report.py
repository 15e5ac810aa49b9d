"""Targets, verdicts and the printed table of bench/bench_load.py (see its docstring for what is measured)."""

from __future__ import annotations

import argparse
from typing import Any

# The targets; the memory bound per open stream is ours (the issue says "bounded" without a figure).
TARGETS = {"added_p99_ms": 5.0, "kb_per_stream": 100.0, "soak_slope_mb_per_min": 1.0}


def slope_mb_per_min(series: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (s, MB) points, in MB per minute."""
    if len(series) < 3:
        return None
    n = len(series)
    mt, mr = sum(t for t, _ in series) / n, sum(r for _, r in series) / n
    var = sum((t - mt) ** 2 for t, _ in series)
    return sum((t - mt) * (r - mr) for t, r in series) / var * 60 if var else None


def pooled(phases: list[dict[str, Any]], who: str, key: str) -> float | None:
    """Worst value of ``key`` over the phases of ``who`` (the pessimistic figure across rounds)."""
    values = [p[key] for p in phases if p["who"] == who and p[key] is not None]
    return max(values) if values else None


def verdicts(res: dict[str, Any], args: argparse.Namespace) -> dict[str, bool]:
    """Targets of issue 7 (the memory bound per stream is ours: 100 KB of gateway RSS per open stream)."""
    out: dict[str, bool] = {}
    gw = [p for p in res["phases"] if p["who"] == "gateway"]
    if gw:
        out["every gateway stream complete"] = all(p["completed"] == args.streams for p in gw)
        out["usage row per gateway stream"] = all(p["usage_rows"]["ok"] == args.streams for p in gw)
        added = [res["added_p99_ms"][r] for r in sorted(res["added_p99_ms"])]
        out["added per-chunk p99 <= 5 ms"] = bool(added) and max(added) <= TARGETS["added_p99_ms"]
        out["gateway RSS per open stream <= 100 KB"] = all(
            p["gateway_kb_per_stream"] <= TARGETS["kb_per_stream"] for p in gw
        )
    if soaked := res.get("soak"):
        g = soaked["gateway"]
        out["soak: every gateway stream complete"] = g["streams"] > 0 and g["completed"] == g["streams"]
        slope = soaked["gateway_rss_mb"]["slope_mb_per_min_after_1min"]
        out["soak: RSS slope < 1 MB/min"] = slope is not None and slope < TARGETS["soak_slope_mb_per_min"]
        out["soak: added per-chunk p99 <= 5 ms"] = (soaked["added_p99_ms"] or 1e9) <= TARGETS["added_p99_ms"]
    return out


def report(res: dict[str, Any]) -> None:
    """Print one line per phase, the soak's summary and the verdicts."""
    head = "phase    rnd  done/streams  errors  chunk p50/p99/max ms   gw RSS MB before/peak/after  KB/str"
    print(head + "  CPU s gw/up/client/other  rows  loadavg")
    for ph in res["phases"]:
        lat = "/".join(f"{ph[k]:.2f}" if ph[k] is not None else "-" for k in ("p50_ms", "p99_ms", "max_ms"))
        rss, cpu = ph["gateway_rss_mb"], ph["cpu_s"]
        mem = f"{rss['before']:.0f}/{rss['peak']:.0f}/{rss['after']:.0f}"
        cpus = "/".join(f"{cpu[k]:.1f}" for k in ("gateway", "upstream", "client", "other"))
        rows = ph["usage_rows"]["ok"] if ph["who"] == "gateway" else "-"
        errors = sum(ph["errors"].values())
        print(
            f"{ph['who']:8s} {ph['round']:3d}  {ph['completed']:5d}/{ph['streams']:<6d} {errors:6d}  {lat:21s}  "
            f"{mem:28s} {ph['gateway_kb_per_stream']:6.1f}  {cpus:24s} {rows!s:5s} {ph['loadavg']['after']}"
        )
    for r, added in res["added_p99_ms"].items():
        print(f"round {r}: added per-chunk p99 = {added:+.2f} ms (target <= {TARGETS['added_p99_ms']:g})")
    if soaked := res.get("soak"):
        g, d, mem = soaked["gateway"], soaked["direct"], soaked["gateway_rss_mb"]
        print(f"soak {soaked['seconds']:.0f} s at {soaked['rate']:g} streams/s each way:")
        for who, t in (("direct", d), ("gateway", g)):
            lat = "/".join(f"{t[k]:.2f}" if t[k] is not None else "-" for k in ("p50_ms", "p99_ms", "max_ms"))
            print(
                f"  {who:8s} {t['completed']}/{t['streams']} complete, errors {t['errors']}, chunk p50/p99/max {lat} ms"
            )
        added = soaked["added_p99_ms"]
        print(f"  added per-chunk p99 = {added:+.2f} ms" if added is not None else "  added per-chunk p99: -")
        slope = mem["slope_mb_per_min_after_1min"]
        print(
            f"  gateway RSS MB: first min {mem['first_minute_mean']:.1f}, last min {mem['last_minute_mean']:.1f}, "
            f"max {mem['max']:.1f}; slope after 1 min {slope if slope is None else round(slope, 3)} MB/min, "
            f"in the second half {mem['slope_mb_per_min_second_half']}; most gateway streams open at a sample: "
            f"{mem['max_open_gateway_streams']}"
        )
        print(f"  usage rows {soaked['usage_rows']}, CPU s {soaked['cpu_s']}, loadavg {soaked['loadavg']['after']}")
    for name, ok in res["verdicts"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print(f"{sum(res['verdicts'].values())}/{len(res['verdicts'])} targets met; loadavg {res['loadavg_end']}")

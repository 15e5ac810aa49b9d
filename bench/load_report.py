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


def summarize(res: dict[str, Any]) -> None:
    """Add the pooled percentiles per kind of phase, the added p99 per round and the floor's figures to ``res``.

    ``added_p99_ms``: per round, p99(gateway) - p99(direct) of that round (what the verdict reads). ``floor``
    (when the floor ran): per round, the floor's added p99 (p99(floor) - p99(direct)), the gateway's, the gap
    between them, and the CPU seconds the gateway used in its phase against those the floor used in its own;
    then the worst round's added p99 of each and the gap between those two, the CPU seconds summed over the
    rounds and their ratio (None when the floor used too little CPU to measure).
    """
    phases = res["phases"]
    for who in ("direct", "floor", "gateway"):
        if any(p["who"] == who for p in phases):
            for key in ("p50_ms", "p99_ms", "max_ms"):
                res[f"{who}_{key}"] = pooled(phases, who, key)
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for ph in phases:
        by_round.setdefault(ph["round"], {})[ph["who"]] = ph

    def added(phs: dict[str, dict[str, Any]], who: str) -> float | None:
        if who not in phs or "direct" not in phs or None in (phs[who]["p99_ms"], phs["direct"]["p99_ms"]):
            return None
        return float(phs[who]["p99_ms"] - phs["direct"]["p99_ms"])

    res["added_p99_ms"] = {r: a for r, phs in by_round.items() if (a := added(phs, "gateway")) is not None}
    rounds: dict[int, dict[str, Any]] = {}
    for r, phs in by_round.items():
        floor, gateway = added(phs, "floor"), added(phs, "gateway")
        if floor is None or gateway is None:
            continue
        cpu_gw, cpu_floor = phs["gateway"]["cpu_s"]["gateway"], phs["floor"]["cpu_s"]["floor"]
        rounds[r] = {"floor_added_p99_ms": round(floor, 3), "gateway_added_p99_ms": round(gateway, 3)}
        rounds[r]["gateway_above_floor_ms"] = round(gateway - floor, 3)
        rounds[r].update(cpu_s_gateway=cpu_gw, cpu_s_floor=cpu_floor, cpu_gateway_over_floor=ratio(cpu_gw, cpu_floor))
    if rounds:
        rows = list(rounds.values())
        worst = {k: max(v[k] for v in rows) for k in ("floor_added_p99_ms", "gateway_added_p99_ms")}
        cpu = {k: round(sum(v[k] for v in rows), 3) for k in ("cpu_s_gateway", "cpu_s_floor")}
        above = round(worst["gateway_added_p99_ms"] - worst["floor_added_p99_ms"], 3)
        res["floor"] = {"by_round": rounds, **worst, "gateway_above_floor_ms": above, **cpu}
        res["floor"]["cpu_gateway_over_floor"] = ratio(cpu["cpu_s_gateway"], cpu["cpu_s_floor"])


RELAYS = ("floor", "asgi", "asgi_w", "gateway", "baseline")  # each phase that relays; the process whose CPU it reads


def relays(res: dict[str, Any]) -> None:
    """Add ``relays`` to ``res``: per relay that ran and per round, its added chunk p50 and p99 (minus direct of the
    same round), the CPU microseconds its process used per chunk relayed and their ratio to the raw pipe's ("floor")
    of that round; then, per relay, the CPU summed over the rounds per chunk and its ratio, and the added figures'
    worst round."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for ph in res["phases"]:
        by_round.setdefault(ph["round"], {})[ph["who"]] = ph
    out: dict[str, Any] = {"by_round": {}, "total": {}}
    sums: dict[str, list[float]] = {}
    for r, phs in sorted(by_round.items()):
        direct, row = phs.get("direct"), {}
        for who in RELAYS:
            ph = phs.get(who)
            if ph is None or direct is None or not ph["chunks_timed"] or None in (ph["p99_ms"], direct["p99_ms"]):
                continue
            cpu, kernel, chunks = ph["cpu_s"][who], ph["cpu_s"][f"{who}_kernel"], ph["chunks_timed"]
            row[who] = {
                "added_p50_ms": round(ph["p50_ms"] - direct["p50_ms"], 3),
                "added_p99_ms": round(ph["p99_ms"] - direct["p99_ms"], 3),
                "cpu_us_per_chunk": round(cpu * 1e6 / chunks, 2),
                "kernel_us_per_chunk": round(kernel * 1e6 / chunks, 2),
            }
            cpu_chunks = sums.setdefault(who, [0.0, 0.0, 0.0])
            cpu_chunks[0] += cpu
            cpu_chunks[1] += kernel
            cpu_chunks[2] += chunks
        if "floor" in row:
            for v in row.values():
                v["cpu_over_floor"] = ratio(v["cpu_us_per_chunk"], row["floor"]["cpu_us_per_chunk"])
        out["by_round"][r] = row
    for who, (cpu, kernel, chunks) in sums.items():
        rows = [row[who] for row in out["by_round"].values() if who in row]
        out["total"][who] = {
            "cpu_us_per_chunk": round(cpu * 1e6 / chunks, 2),
            "kernel_us_per_chunk": round(kernel * 1e6 / chunks, 2),
            "added_p50_ms": [v["added_p50_ms"] for v in rows],
            "added_p99_ms": [v["added_p99_ms"] for v in rows],
        }
    if "floor" in out["total"]:
        base = out["total"]["floor"]["cpu_us_per_chunk"]
        for v in out["total"].values():
            v["cpu_over_floor"] = ratio(v["cpu_us_per_chunk"], base)
    res["relays"] = out


def ratio(a: float, b: float) -> float | None:
    """``a / b`` rounded, or None when ``b`` is zero (too little CPU to measure)."""
    return round(a / b, 2) if b > 0 else None


def span(values: list[float], fmt: str) -> str:
    """``a..b`` (or ``a`` alone when all are equal) with each end formatted by ``fmt``."""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}..{hi}"


def verdicts(res: dict[str, Any], args: argparse.Namespace) -> dict[str, bool]:
    """Targets of issue 7 (the memory bound per stream is ours: 100 KB of gateway RSS per open stream)."""
    out: dict[str, bool] = {}
    gw = [p for p in res["phases"] if p["who"] == "gateway"]
    if gw:
        out["every gateway stream complete"] = all(p["completed"] == args.streams for p in gw)
        out["usage row per gateway stream"] = all(p["usage_rows"]["ok"] == args.streams for p in gw)
        added = [res["added_p99_ms"][r] for r in sorted(res["added_p99_ms"])]
        out["added per-chunk p99 <= 5 ms"] = bool(added) and max(added) <= TARGETS["added_p99_ms"]
        # From the RSS when idle before any burst, warm-up bursts included: the first burst is where it grows.
        peak = max(p["gateway_rss_mb"]["peak"] for p in gw + res.get("warm", []) if p["who"] == "gateway")
        kb = (peak - res["gateway_rss_idle_mb"]) * 1024 / max(1, args.streams)
        out["gateway RSS per open stream <= 100 KB"] = kb <= TARGETS["kb_per_stream"]
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
    print(head + "  CPU s gw/floor/up/client/other  rows  loadavg")
    for ph in res["phases"]:
        lat = "/".join(f"{ph[k]:.2f}" if ph[k] is not None else "-" for k in ("p50_ms", "p99_ms", "max_ms"))
        rss, cpu = ph["gateway_rss_mb"], ph["cpu_s"]
        mem = f"{rss['before']:.0f}/{rss['peak']:.0f}/{rss['after']:.0f}"
        keys = ("gateway", "floor", "upstream", "client", "other")
        cpus = "/".join(f"{cpu[k]:.1f}" if k in cpu else "-" for k in keys)
        rows = ph["usage_rows"]["ok"] if ph["who"] == "gateway" else "-"
        errors = sum(ph["errors"].values())
        print(
            f"{ph['who']:8s} {ph['round']:3d}  {ph['completed']:5d}/{ph['streams']:<6d} {errors:6d}  {lat:21s}  "
            f"{mem:28s} {ph['gateway_kb_per_stream']:6.1f}  {cpus:30s} {rows!s:5s} {ph['loadavg']['after']}"
        )
    floor = res.get("floor", {}).get("by_round", {})
    for r, added in res["added_p99_ms"].items():
        line = f"round {r}: added per-chunk p99 = {added:+.2f} ms (target <= {TARGETS['added_p99_ms']:g})"
        if f := floor.get(r):
            line += (
                f"; floor {f['floor_added_p99_ms']:+.2f} ms, the gateway {f['gateway_above_floor_ms']:.2f} ms above it"
            )
            line += f"; CPU s gateway/floor {f['cpu_s_gateway']:.2f}/{f['cpu_s_floor']:.2f}"
        print(line)
    if floor:
        per_round = list(floor.values())
        cpu = res["floor"]["cpu_gateway_over_floor"]
        print(
            f"info  floor (raw TCP pipe, no HTTP work) added p99 = "
            f"{span([v['floor_added_p99_ms'] for v in per_round], '+.2f')} ms; the gateway is "
            f"{span([v['gateway_above_floor_ms'] for v in per_round], '.2f')} ms above the floor; "
            f"CPU gateway/floor = {'-' if cpu is None else format(cpu, '.1f')}"
        )
    if totals := res.get("relays", {}).get("total"):
        print("relay    CPU us/chunk (kernel)  x raw pipe  added p50 ms (by round)    added p99 ms (by round)")
        for who, t in totals.items():
            over = "-" if t.get("cpu_over_floor") is None else f"{t['cpu_over_floor']:.2f}"
            p50 = " ".join(f"{v:+.2f}" for v in t["added_p50_ms"])
            p99 = " ".join(f"{v:+.2f}" for v in t["added_p99_ms"])
            cpu = f"{t['cpu_us_per_chunk']:.1f} ({t['kernel_us_per_chunk']:.1f})"
            print(f"{who:8s} {cpu:>21s}  {over:>10s}  {p50:25s}  {p99}")
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

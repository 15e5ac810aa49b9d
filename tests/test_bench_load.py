"""bench/bench_load.py at a tiny size, so the script cannot rot: it runs, and its JSON has every field.

A smoke test of the script, not a measurement: no figure is compared with a target here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PHASE_FIELDS = {
    "round", "who", "streams", "completed", "errors", "peak_in_flight", "chunks_timed", "p50_ms", "p99_ms",
    "max_ms", "p99_ms_by_second", "wall_s", "cpu_s", "gateway_rss_mb", "gateway_kb_per_stream", "usage_rows", "loadavg",
}  # fmt: skip
TOP_FIELDS = {
    "args", "cpus", "loadavg_start", "loadavg_end", "phases", "added_p99_ms", "verdicts", "soak", "gateway_log",
    "gateway_rss_idle_mb", "gateway_rss_end_mb", "gateway_rss_hwm_mb", "direct_p99_ms", "gateway_p99_ms",
}  # fmt: skip
SOAK_FIELDS = {
    "direct", "gateway", "added_p99_ms", "seconds", "rate", "cpu_s", "per_minute", "gateway_rss_mb", "usage_rows",
    "loadavg",
}  # fmt: skip


def test_bench_load_tiny_run_writes_every_field(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    tiny = "--streams 20 --chunks 8 --interval 0.01 --ramp 0.1 --rounds 1 --settle 0.1"
    soak = "--soak-seconds 1.5 --rate 4 --sample 0.25 --time-limit 120"
    cmd = [sys.executable, "bench/bench_load.py", *tiny.split(), *soak.split(), "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res) >= TOP_FIELDS, TOP_FIELDS - set(res)
    assert [p["who"] for p in res["phases"]] == ["direct", "gateway"]
    for phase in res["phases"]:
        assert set(phase) >= PHASE_FIELDS
        assert phase["completed"] == 20, phase["errors"]  # correctness, not speed: no stream may be lost
        assert phase["chunks_timed"] == 20 * 8
        assert set(phase["gateway_rss_mb"]) == {"before", "peak", "after"}
        assert set(phase["cpu_s"]) == {"gateway", "gateway_kernel", "upstream", "client", "other"}
    assert res["phases"][1]["usage_rows"] == {"stored": 20, "ok": 20}
    soaked = res["soak"]
    assert set(soaked) >= SOAK_FIELDS
    assert soaked["gateway"]["streams"] > 0 and soaked["gateway"]["completed"] == soaked["gateway"]["streams"]
    assert soaked["usage_rows"]["ok"] == soaked["gateway"]["streams"]
    rss = soaked["gateway_rss_mb"]
    slopes = {"slope_mb_per_min_after_1min", "slope_mb_per_min_second_half"}
    assert set(rss) >= {"first_minute_mean", "last_minute_mean", "max", "max_open_gateway_streams", "series", *slopes}
    assert len(rss["series"]) >= 3
    assert set(res["verdicts"]) >= {"every gateway stream complete", "added per-chunk p99 <= 5 ms"}
    assert "targets met" in done.stdout

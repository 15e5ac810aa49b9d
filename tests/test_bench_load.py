"""bench/bench_load.py at a tiny size, so the script cannot rot: it runs, and its JSON has every field.

A smoke test of the script, not a measurement: no figure is compared with a target here. Also
bench/relay_floor.py (the floor phase's raw TCP pipe) on its own, against a tiny loopback server; the ASGI floors
(bench/relay_asgi_floor.py) run in the tiny run's "asgi" and "asgi_w" phases.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

PHASE_FIELDS = {
    "round", "who", "streams", "completed", "errors", "peak_in_flight", "chunks_timed", "p50_ms", "p99_ms",
    "max_ms", "p99_ms_by_second", "wall_s", "cpu_s", "gateway_rss_mb", "gateway_kb_per_stream", "usage_rows", "loadavg",
}  # fmt: skip
TOP_FIELDS = {
    "args", "cpus", "loadavg_start", "loadavg_end", "phases", "added_p99_ms", "verdicts", "soak", "gateway_log",
    "gateway_rss_idle_mb", "gateway_rss_end_mb", "gateway_rss_hwm_mb", "direct_p99_ms", "gateway_p99_ms",
    "floor_p99_ms", "floor", "relays",
}  # fmt: skip
RELAY_FIELDS = {"added_p50_ms", "added_p99_ms", "cpu_us_per_chunk", "kernel_us_per_chunk", "cpu_over_floor"}
PHASES = ["direct", "floor", "asgi", "asgi_w", "gateway"]
FLOOR_ROUND_FIELDS = {
    "floor_added_p99_ms", "gateway_added_p99_ms", "gateway_above_floor_ms", "cpu_s_gateway", "cpu_s_floor",
    "cpu_gateway_over_floor",
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
    assert [p["who"] for p in res["phases"]] == PHASES
    assert [p["who"] for p in res["warm"]] == PHASES  # uncounted, kept for the RSS bound
    assert all(p["completed"] == 20 for p in res["warm"])
    for phase in res["phases"]:
        assert set(phase) >= PHASE_FIELDS
        assert phase["completed"] == 20, phase["errors"]  # correctness, not speed: no stream may be lost
        assert phase["errors"] == {}
        assert phase["chunks_timed"] == 20 * 8
        assert set(phase["gateway_rss_mb"]) == {"before", "peak", "after"}
        relays = {"gateway", "floor", "asgi", "asgi_w"}
        assert set(phase["cpu_s"]) == {*relays, *(f"{r}_kernel" for r in relays), "upstream", "client", "other"}
    direct, floor, asgi, asgi_w, gateway = res["phases"]
    assert gateway["usage_rows"] == {"stored": 20, "ok": 20}
    for other in (floor, asgi, asgi_w):
        assert other["usage_rows"] == {"stored": 0, "ok": 0}  # the floors' streams never touch the gateway
    floors = res["floor"]
    assert set(floors["by_round"]) == {"0"}
    row = floors["by_round"]["0"]
    assert set(row) == FLOOR_ROUND_FIELDS
    assert row["floor_added_p99_ms"] == round(floor["p99_ms"] - direct["p99_ms"], 3)
    assert row["gateway_added_p99_ms"] == round(res["added_p99_ms"]["0"], 3)
    assert row["cpu_s_floor"] == floor["cpu_s"]["floor"] and row["cpu_s_gateway"] == gateway["cpu_s"]["gateway"]
    assert res["floor_p99_ms"] == floor["p99_ms"]
    assert "floor (raw TCP pipe, no HTTP work) added p99 = " in done.stdout
    by_relay = res["relays"]["by_round"]["0"]
    assert set(by_relay) == {"floor", "asgi", "asgi_w", "gateway"}
    assert all(set(v) == RELAY_FIELDS for v in by_relay.values())
    assert by_relay["asgi"]["added_p99_ms"] == round(asgi["p99_ms"] - direct["p99_ms"], 3)
    assert by_relay["gateway"]["cpu_us_per_chunk"] == round(gateway["cpu_s"]["gateway"] * 1e6 / (20 * 8), 2)
    assert set(res["relays"]["total"]) == set(by_relay)
    assert "relay    CPU us/chunk (kernel)  x raw pipe" in done.stdout
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_relay(upstream_port: int) -> tuple[subprocess.Popen[bytes], int]:
    """bench/relay_floor.py piping to ``upstream_port``; returns once one TCP connect to it succeeded."""
    port = free_port()
    argv = [sys.executable, "bench/relay_floor.py", "--port", str(port), "--upstream-port", str(upstream_port)]
    proc = subprocess.Popen(argv, cwd=ROOT)
    end = time.monotonic() + 20
    while time.monotonic() < end:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return proc, port
        except OSError:
            assert proc.poll() is None, "relay_floor.py exited"
            time.sleep(0.02)
    proc.kill()
    raise AssertionError("relay_floor.py did not listen")


def read_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(65536, n - len(data)))
        assert chunk, f"closed after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def test_relay_floor_pipes_bytes_both_ways_and_closes_each_side_with_the_other() -> None:
    with socket.create_server((HOST, 0)) as server:
        server.settimeout(10)
        proc, port = start_relay(server.getsockname()[1])
        try:
            probe, _ = server.accept()  # start_relay's connect, closed at once: the relay closes its upstream too
            with probe:
                probe.settimeout(10)
                assert probe.recv(1) == b""

            client = socket.create_connection((HOST, port), timeout=10)
            client.sendall(b"GET / HTTP/1.1\r\n\r\n")  # sent at once: held until the upstream connection is up
            conn, _ = server.accept()
            conn.settimeout(10)
            assert read_exactly(conn, 18) == b"GET / HTTP/1.1\r\n\r\n"
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            assert read_exactly(client, 17) == b"HTTP/1.1 200 OK\r\n"

            # 8 MiB each way with a reader that starts late: flow control may pause either side, nothing is lost.
            blob = os.urandom(8 << 20)
            senders = [threading.Thread(target=sock.sendall, args=(blob,)) for sock in (conn, client)]
            for t in senders:
                t.start()
            time.sleep(0.3)
            for sock in (client, conn):
                assert hashlib.sha256(read_exactly(sock, len(blob))).digest() == hashlib.sha256(blob).digest()
            for t in senders:
                t.join(10)

            conn.close()  # the upstream closes: so does the client's side, after what was already sent
            assert client.recv(1) == b""
            client.close()

            client = socket.create_connection((HOST, port), timeout=10)
            conn, _ = server.accept()
            conn.settimeout(10)
            client.close()  # the client closes: so does the upstream's side
            assert conn.recv(1) == b""
            conn.close()
        finally:
            server.close()
        try:  # the upstream is gone: the relay answers nothing itself, it closes the client
            with socket.create_connection((HOST, port), timeout=10) as client:
                assert client.recv(1) == b""
        finally:
            proc.terminate()
            proc.wait(10)

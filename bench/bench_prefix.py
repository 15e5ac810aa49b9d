"""Long conversations: minigate's prefix cache against llama-server's prompt cache, side by side in one run.

The same 10-turn conversation (a system prompt, then each turn resends the history with the last answer) goes to
minigate with its prefix cache on, minigate with it off, and llama-server (``-np 8``, prompt cache on) on the
same model (SmolLM2-135M-Instruct: minigate's int4 conversion; the wheel's GGUF and a Q4_0 made from it with
llama-quantize). Reports the time to first token of every turn (and the median over turns 2-10), then the total
tokens/s of 8 conversations started 50 ms apart, with /proc/loadavg before and after.

``--pause`` is a user's reading time between turns (0: back to back, like an agent).

    python bench/bench_prefix.py --models-dir ~/.cache/minigate-test/models --pause 0 --pause 1 \\
        --gguf ~/.cache/minigate-bench/SmolLM2-135M-Instruct.Q4_0.gguf
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs as bg

SYSTEM = (
    "You are Ada, a friendly and patient assistant for a small bakery's staff. Answer in two or three short "
    "sentences. Be concrete, name quantities and times, and never invent prices. If you are not sure, say so. "
    "The bakery opens at 6 am, bakes sourdough, rye and croissants, and closes on Mondays."
)
TURNS = [
    "How early should the sourdough be started for a 6 am opening?",
    "And the rye bread?",
    "What temperature should the proofing room be?",
    "How do I know the croissant dough is laminated well?",
    "What can we do with yesterday's bread?",
    "How should flour be stored?",
    "A customer asks if the rye has gluten. What do I say?",
    "How do I clean the oven stones?",
    "What should the Monday deep clean include?",
    "Summarise the three most important things you told me.",
]


async def turn(session: Any, url: str, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    """One streamed chat turn: the answer, time to first token, completion tokens and seconds."""
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": True,  # llama-server's prompt cache (its default; minigate ignores unknown fields)
    }
    started = time.perf_counter()
    ttft, text, tokens, prompt = 0.0, [], 0, 0
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {await response.text()}")
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    ttft = ttft or time.perf_counter() - started
                    text.append(piece)
                    tokens += 1
            if chunk.get("usage"):
                tokens = chunk["usage"].get("completion_tokens", tokens)
                prompt = chunk["usage"].get("prompt_tokens", 0)
    return {"text": "".join(text), "ttft": ttft, "tokens": tokens, "prompt": prompt, "s": time.perf_counter() - started}


async def conversation(
    session: Any, url: str, model: str, turns: int, max_tokens: int, pause: float, delay: float = 0.0
) -> list[dict[str, Any]]:
    """A whole conversation; each turn's result."""
    await asyncio.sleep(delay)
    messages = [{"role": "system", "content": SYSTEM}]
    out = []
    for question in TURNS[:turns]:
        messages.append({"role": "user", "content": question})
        result = await turn(session, url, model, messages, max_tokens)
        messages.append({"role": "assistant", "content": result["text"]})
        out.append(result)
        await asyncio.sleep(pause)
    return out


def start_minigate(
    tmp: Path, name: str, models_dir: Path, cache: str, threads: int, reuse: str = "exact"
) -> tuple[bg.Proc, str]:
    """A gateway serving the default model with the prefix cache ``cache`` (``reuse``: its prefix_reuse); its chat
    URL."""
    port = bg.free_port()
    local = {"type": "onnxruntime-genai", "models_dir": str(models_dir), "idle_ttl": None, "prefix_cache": cache}
    local["prefix_reuse"] = reuse
    config = {
        "agents": {"defaults": {"model": {"primary": "local/smollm2-135m-instruct"}}},
        "models": {"providers": {"local": {**local, "cpu_threads": threads}}},
        "server": {"host": bg.HOST, "data_dir": str(tmp / f"data-{name}")},
    }
    (tmp / f"{name}.json").write_text(json.dumps(config))
    argv = [
        sys.executable,
        "-m",
        "minigate.gateway.cli",
        "serve",
        "--workers=1",
        "--no-pull",
        "--config",
        str(tmp / f"{name}.json"),
    ]
    proc = bg.spawn([*argv, "--port", str(port)], tmp / f"{name}.log", {"MINIGATE_ADMIN_KEY": bg.KEY})
    bg.wait_until(lambda: proc.poll() is None and bg.answers(port, "GET", "/health"), 60, 0.05)
    return proc, f"http://{bg.HOST}:{port}/v1/chat/completions"


def start_llama(tmp: Path, name: str, binary: Path, gguf: Path, threads: int) -> tuple[bg.Proc, str]:
    """llama-server with 8 slots, continuous batching and its prompt cache; its chat URL."""
    port = bg.free_port()
    argv = [str(binary), "-m", str(gguf), "--host", bg.HOST, "--port", str(port), "-np", "8", "-c", "32768"]
    argv += ["-t", str(threads), "--cont-batching", "--cache-prompt", "--no-webui"]
    proc = bg.spawn(argv, tmp / f"{name}.log")
    bg.wait_until(lambda: proc.poll() is None and bg.answers(port, "GET", "/health"), 60, 0.05)
    return proc, f"http://{bg.HOST}:{port}/v1/chat/completions"


def loadavg() -> str:
    """/proc/loadavg."""
    with open("/proc/loadavg", encoding="ascii") as fh:
        return fh.read().strip()


def show_logs(folder: str) -> None:
    """The end of each server's log, after a failure."""
    for log in sorted(Path(folder).glob("*.log")):
        print(f"--- {log.name}\n{log.read_text()[-1500:]}", file=sys.stderr)


def median_ms(values: list[float]) -> float:
    """The median in milliseconds."""
    return 1000 * statistics.median(values) if values else float("nan")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=Path.home() / ".cache/minigate-test/models")
    parser.add_argument("--llama-server", type=Path, default=Path.home() / ".cache/minigate-bench/llama-server")
    parser.add_argument("--gguf", type=Path, action="append", help="GGUF files for llama-server (repeatable)")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--pause", type=float, action="append", help="seconds between turns (repeatable; 0)")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--stagger", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=900.0)
    parser.add_argument(
        "--generated",
        action="store_true",
        help='also minigate with prefix_reuse "generated" (opt-in: reuses its answers\' decode steps, not exact)',
    )
    args = parser.parse_args()
    import aiohttp

    ggufs = args.gguf or [Path.home() / ".cache/minigate-bench/SmolLM2-135M-Instruct.Q4_0.gguf"]
    pauses = args.pause or [0.0]
    deadline = time.monotonic() + args.time_limit
    running: list[bg.Proc] = []
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as folder:
        tmp = Path(folder)
        servers: dict[str, tuple[str, str]] = {}
        try:
            setups = [("minigate cache on", "1GiB", "exact"), ("minigate cache off", "off", "exact")]
            setups += [("minigate generated", "1GiB", "generated")] if args.generated else []
            for name, cache, reuse in setups:
                proc, url = start_minigate(tmp, name.replace(" ", "-"), args.models_dir, cache, args.threads, reuse)
                running.append(proc)
                servers[name] = (url, "default")
            for gguf in ggufs:
                name = f"llama-server {gguf.stem.rsplit('.', 1)[-1]}"
                proc, url = start_llama(tmp, name.replace(" ", "-"), args.llama_server, gguf, args.threads)
                running.append(proc)
                servers[name] = (url, "smollm2")
            timeout = aiohttp.ClientTimeout(total=600)
            # A connection per request: llama-server closes idle keep-alive connections under the client's feet.
            connector = aiohttp.TCPConnector(force_close=True)
            headers = {"authorization": f"Bearer {bg.KEY}"}
            async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as s:
                for url, model in servers.values():  # warm up: load the model, first-request costs
                    await turn(s, url, model, [{"role": "user", "content": "hi"}], 4)
                print(f"loadavg before: {loadavg()}")
                for pause in pauses:
                    print(f"\n## one conversation, {args.turns} turns, max_tokens {args.max_tokens}, pause {pause}s")
                    print("TTFT ms per turn; prompt tokens of the last turn; median TTFT of turns 2-10")
                    for name, (url, model) in servers.items():
                        if time.monotonic() > deadline:
                            break
                        results = await conversation(s, url, model, args.turns, args.max_tokens, pause)
                        ttfts = " ".join(f"{1000 * r['ttft']:.0f}" for r in results)
                        later = median_ms([r["ttft"] for r in results[1:]])
                        print(f"{name:22} {ttfts} | prompt {results[-1]['prompt']} | median 2-10: {later:.0f} ms")
                print(f"\n## {args.conversations} conversations started {args.stagger}s apart, pause {pauses[0]}s")
                for name, (url, model) in servers.items():
                    if time.monotonic() > deadline:
                        break
                    started = time.perf_counter()
                    jobs = [
                        conversation(s, url, model, args.turns, args.max_tokens, pauses[0], i * args.stagger)
                        for i in range(args.conversations)
                    ]
                    runs = await asyncio.gather(*jobs)
                    seconds = time.perf_counter() - started
                    tokens = sum(r["tokens"] for run in runs for r in run)
                    later = median_ms([r["ttft"] for run in runs for r in run[1:]])
                    worst = max(r["ttft"] for run in runs for r in run)
                    print(
                        f"{name:22} {tokens / seconds:6.1f} tok/s total ({tokens} tokens in {seconds:.1f} s), "
                        f"median TTFT turns 2-10 {later:.0f} ms, worst {1000 * worst:.0f} ms"
                    )
                print(f"\nloadavg after: {loadavg()}")
        except Exception:
            show_logs(folder)
            raise
        finally:
            for proc in running:
                bg.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

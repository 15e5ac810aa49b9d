"""Local inference overhead: the bare onnxruntime-genai loop against the provider (worker process + pipes).

Same model, same prompt, same greedy settings, in one run, interleaved (bare, provider, bare, provider...)
because this machine is shared and absolute figures swing by a third from minute to minute. Reports:

- single stream: tokens/s and time to first token (TTFT), provider as a ratio of bare (target >= 0.95) and as a
  TTFT delta (target <= +10 ms);
- N concurrent streams started together: total tokens/s (target >= 2x the provider's single stream) and p95
  TTFT, with bare as one static batch of N for reference;
- model load time: bare ``og.Model`` vs the provider's worker start (process spawn + import + load).

Every loop is bounded by ``--max-tokens`` and the run by ``--time-limit`` seconds.

    python bench/bench_local.py --models-dir ./models --model smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minigate.providers.base import ProviderRequest
from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig

PROMPT = "Tell me a long story about a dragon who learns to read."


class Bare:
    """The plain onnxruntime-genai loop, in this process."""

    def __init__(self, folder: Path, threads: int | None) -> None:
        import onnxruntime_genai as og

        self.og = og
        started = time.perf_counter()
        config = og.Config(str(folder))
        config.clear_providers()
        if threads:
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)
        self.load_seconds = time.perf_counter() - started

    def _ids(self, content: str) -> Any:
        messages = json.dumps([{"role": "user", "content": content}])
        return self.tokenizer.encode(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def run(self, max_tokens: int, batch: int = 1) -> tuple[float, int, float]:
        """(TTFT seconds, tokens generated in all, seconds) for one batch of ``batch`` identical prompts."""
        import numpy as np

        og = self.og
        started = time.perf_counter()
        ids = self._ids(PROMPT)
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(ids) + max_tokens, do_sample=False, batch_size=batch)
        generator = og.Generator(self.model, params)
        generator.append_tokens(np.array([ids] * batch, dtype=np.int32))
        stream = self.tokenizer.create_stream()
        eos = set(self.tokenizer.eos_token_ids)
        ttft, tokens, alive = 0.0, 0, [True] * batch
        for _ in range(max_tokens):
            if generator.is_done():
                break
            generator.generate_next_token()
            for row, token in enumerate(generator.get_next_tokens()):
                if alive[row]:
                    tokens += 1
                    alive[row] = int(token) not in eos
                    if row == 0 and alive[row]:
                        stream.decode(int(token))
            if not ttft:
                ttft = time.perf_counter() - started
        return ttft, tokens, time.perf_counter() - started


async def provider_stream(provider: OnnxProvider, model: str, max_tokens: int) -> tuple[float, int, float]:
    """(TTFT seconds, completion tokens, seconds) of one streamed request through the provider."""
    body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens, "temperature": 0}
    body["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    stream = await provider.open_stream(ProviderRequest("chat/completions", model, body, True, time.monotonic() + 600))
    ttft, tokens = 0.0, 0
    try:
        async for chunk in stream:
            if not ttft and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    finally:
        await stream.aclose()
    return ttft, tokens, time.perf_counter() - started


async def staggered(delay: float, provider: OnnxProvider, model: str, max_tokens: int) -> tuple[float, int, float]:
    """``provider_stream`` after ``delay`` seconds (TTFT counted from the stream's own start)."""
    if delay:
        await asyncio.sleep(delay)
    return await provider_stream(provider, model, max_tokens)


def p95(values: list[float]) -> float:
    """95th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", default="./models")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds of each measurement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cpu-threads", type=int, default=None)
    parser.add_argument("--time-limit", type=float, default=300.0, help="stop starting rounds after this")
    parser.add_argument("--stagger-ms", type=float, default=0.0, help="start concurrent streams this far apart")
    parser.add_argument("--merge-tokens", type=int, default=None, help="worker option (0: never merge batches)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    folder = Path(args.models_dir) / args.model
    if not (folder / "genai_config.json").is_file():
        print(f"no model at {folder}: run python -m minigate.providers.onnx.cli pull", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.time_limit
    conf = OnnxProviderConfig(
        models_dir=args.models_dir, max_batch_size=args.concurrency, idle_ttl=None, cpu_threads=args.cpu_threads
    )
    extra = {} if args.merge_tokens is None else {"merge_tokens": args.merge_tokens}
    provider = OnnxProvider("bench", conf, worker_options=extra)
    started = time.perf_counter()
    await provider.load(args.model)
    provider_load = time.perf_counter() - started
    bare = Bare(folder, args.cpu_threads)
    n = args.concurrency
    res: dict[str, list[Any]] = {k: [] for k in ("bare1", "prov1", "bareN", "provN")}
    bare.run(8)  # warm both up
    await provider_stream(provider, args.model, 8)
    for _ in range(args.runs):
        if time.monotonic() > deadline:
            break
        # Which goes first alternates per round, so whatever drifts on the machine hits both alike.
        if len(res["bare1"]) % 2 == 0:
            res["bare1"].append(bare.run(args.max_tokens))
            res["prov1"].append(await provider_stream(provider, args.model, args.max_tokens))
        else:
            res["prov1"].append(await provider_stream(provider, args.model, args.max_tokens))
            res["bare1"].append(bare.run(args.max_tokens))
        res["bareN"].append(bare.run(args.max_tokens, batch=n))
        streams = [staggered(i * args.stagger_ms / 1000, provider, args.model, args.max_tokens) for i in range(n)]
        wall = time.perf_counter()
        runs = await asyncio.gather(*streams)
        res["provN"].append((runs, time.perf_counter() - wall))
    worker = await provider.loaded()[args.model].worker_stats()
    await provider.close()

    def single(key: str) -> tuple[float, float]:
        ttft = statistics.median(r[0] for r in res[key])
        tps = statistics.median(r[1] / r[2] for r in res[key])
        return ttft, tps

    b_ttft, b_tps = single("bare1")
    p_ttft, p_tps = single("prov1")
    bn_tps = statistics.median(r[1] / r[2] for r in res["bareN"])
    bn_ttft = statistics.median(r[0] for r in res["bareN"])
    pn_tps = statistics.median(sum(r[1] for r in runs) / wall for runs, wall in res["provN"])
    pn_p95 = statistics.median(p95([r[0] for r in runs]) for runs, _ in res["provN"])
    out = {
        "model": args.model,
        "max_tokens": args.max_tokens,
        "rounds": len(res["bare1"]),
        "load_s": {"bare": round(bare.load_seconds, 3), "provider_worker_start": round(provider_load, 3)},
        "single": {
            "bare_tok_s": round(b_tps, 1),
            "provider_tok_s": round(p_tps, 1),
            "ratio": round(p_tps / b_tps, 3),
            "bare_ttft_ms": round(b_ttft * 1000, 1),
            "provider_ttft_ms": round(p_ttft * 1000, 1),
            "ttft_delta_ms": round((p_ttft - b_ttft) * 1000, 1),
        },
        f"concurrent_{n}": {
            "bare_static_batch_tok_s": round(bn_tps, 1),
            "bare_batch_ttft_ms": round(bn_ttft * 1000, 1),
            "provider_total_tok_s": round(pn_tps, 1),
            "provider_vs_single": round(pn_tps / p_tps, 2),
            "provider_p95_ttft_ms": round(pn_p95 * 1000, 1),
            "provider_ttft_ms_by_round": [[round(r[0] * 1000) for r in runs] for runs, _ in res["provN"]],
            "stagger_ms": args.stagger_ms,
        },
        "worker": {k: worker.get(k) for k in ("requests", "batches", "merges", "max_batch_seen", "regrows")},
    }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

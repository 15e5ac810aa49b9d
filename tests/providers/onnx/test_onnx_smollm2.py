"""The real default model, SmolLM2-135M-Instruct, converted once from its PyPI wheel (``default_models_dir``)."""

from __future__ import annotations

from pathlib import Path

from tests.providers.onnx.helpers import chat, collect

MODEL = "smollm2-135m-instruct"


async def test_smollm2_knows_the_capital_of_france(default_models_dir: Path) -> None:
    from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    provider = OnnxProvider("local", OnnxProviderConfig(models_dir=str(default_models_dir), idle_ttl=None))
    try:
        question = "What is the capital of France?"
        body = await provider.complete(chat(question, model=MODEL, max_tokens=30, temperature=0))
        assert "Paris" in body["choices"][0]["message"]["content"]
        stream = await provider.open_stream(chat(question, model=MODEL, max_tokens=30, temperature=0, stream=True))
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in await collect(stream) if c["choices"])
        assert "Paris" in text
    finally:
        await provider.close()


def _tool_prompts() -> list[str]:
    """50 different requests a user might make of the three tools (and a few that fit none of them)."""
    cities = ["Paris", "Oslo", "Tokyo", "Lima", "Cairo", "Denver", "Mumbai", "Sydney", "Rome", "Nairobi"]
    prompts = [f"What's the weather in {city}?" for city in cities]
    prompts += [f"Is it warm in {city} today, in fahrenheit?" for city in cities[:5]]
    prompts += [f"Add {a} and {b}." for a, b in ((2, 3), (17, 25), (3.5, 4), (100, 250), (-7, 12))]
    prompts += [f"What is {a} plus {b}?" for a, b in ((9, 10), (1.25, 2.75), (1000, 24), (6, 7), (0, 42))]
    topics = ["pizza in Naples", "whales", "the Python GIL", "cheap flights", "jazz records", "mountain bikes"]
    prompts += [f"Search the web for {topic}." for topic in topics]
    prompts += [f"Find me {n} articles about {topic}." for n, topic in zip((3, 5, 2, 8), topics, strict=False)]
    prompts += ["Tell me a joke.", "hello", "Translate 'cat' into French.", "Who wrote Hamlet?", "Thanks!"]
    prompts += ["How cold is Helsinki in celsius?", "Sum 8 and 13.", "Look up the tallest building.", "Ok", "?"]
    prompts += ["Weather for Berlin please", "2.5 + 2.5 = ?", "search: best coffee grinder", "Add ten and five.", "Hi!"]
    return prompts


async def test_smollm2_required_tool_calls_validate_every_time(default_models_dir: Path) -> None:
    """The issue's bar: 50 requests with tool_choice required over three tool schemas, half JSON and half
    streamed, give 50 calls whose arguments validate against their tool's schema (greedy, the model's default)."""
    import asyncio
    import json

    import jsonschema_rs

    from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig
    from tests.providers.onnx.test_onnx_tools import TOOLS, streamed_calls

    prompts = _tool_prompts()
    assert len(set(prompts)) == 50
    check = {t["function"]["name"]: jsonschema_rs.validator_for(t["function"]["parameters"]) for t in TOOLS}
    provider = OnnxProvider("local", OnnxProviderConfig(models_dir=str(default_models_dir), idle_ttl=None))

    async def call(i: int, prompt: str) -> tuple[str, str]:
        request = chat(prompt, model=MODEL, tools=TOOLS, tool_choice="required", max_tokens=200, stream=i % 2 == 1)
        if request.stream:
            text, calls, finish = streamed_calls(await collect(await provider.open_stream(request)))
            assert (text, finish, len(calls)) == ("", "tool_calls", 1), (prompt, text, calls)
            return calls[0]["name"], calls[0]["arguments"]
        body = await provider.complete(request)
        message = body["choices"][0]["message"]
        assert body["choices"][0]["finish_reason"] == "tool_calls", (prompt, message)
        (only,) = message["tool_calls"]
        return only["function"]["name"], only["function"]["arguments"]

    try:
        results: list[tuple[str, str]] = []
        for start in range(0, len(prompts), 5):  # five at a time: they share a grammar, so they batch
            batch = prompts[start : start + 5]
            results += await asyncio.gather(*(call(start + i, p) for i, p in enumerate(batch)))
    finally:
        await provider.close()
    invalid = [(p, n, a) for p, (n, a) in zip(prompts, results, strict=True) if not check[n].is_valid(json.loads(a))]
    assert invalid == []
    assert {name for name, _ in results} == set(check)  # every tool was chosen at least once

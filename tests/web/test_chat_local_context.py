"""A chat with a real local model (the tiny test model) whose history outgrows its context: the oldest turns are
left out of what is sent, and the conversation goes on instead of failing with a context-length 400.

Skipped where the onnxruntime-genai provider or the tiny model cannot be had, as tests/web/test_browser_local.py.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import GatewayServer
from tests.web.helpers import PASSWORD, WebClient, sse_data, web_config

CONTEXT = 160  # tokens: a few long messages fill it


@pytest.fixture
def small_context(
    gateway_factory: Callable[..., GatewayServer], remote: FakeUpstream, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[WebClient]:
    """A logged-in client of a gateway whose ``local/tiny`` model takes :data:`CONTEXT` tokens at most."""
    pytest.importorskip("onnxruntime_genai")
    from tests.providers.onnx.tinymodel import build_tiny_model, tiny_model_dir

    cache = Path(os.environ.get("MINIGATE_TEST_CACHE") or Path.home() / ".cache" / "minigate-test")
    if not (tiny_model_dir(cache) / "genai_config.json").is_file():
        for tool in ("torch", "transformers", "tokenizers", "onnx", "onnx_ir"):
            pytest.importorskip(tool)
    models = tmp_path / "models"
    shutil.copytree(build_tiny_model(cache), models / "tiny")
    config = web_config(remote)
    config["models"]["providers"]["local"] = {
        "type": "onnxruntime-genai",
        "models_dir": str(models),
        "idle_ttl": None,
        "max_context": CONTEXT,
    }
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", PASSWORD)
    monkeypatch.delenv("MINIGATE_CHAT_PUBLIC", raising=False)
    web = WebClient(gateway_factory(config))
    assert web.login().status_code == 303
    yield web
    web.close()


def test_a_history_past_the_context_of_a_local_model_still_gets_answers(small_context: WebClient) -> None:
    web = small_context
    conversation = web.new_chat("local/tiny", max_tokens="4")
    long = " ".join(f"word{i}" for i in range(25))
    finals = [sse_data(web.send(conversation, f"{n} {long}"))[-1] for n in range(4)]
    assert all('role="alert"' not in f and "answered by" in f for f in finals), finals
    assert "earlier message" not in finals[0]
    assert any("earlier messages were not sent" in f for f in finals[1:])  # the context did fill up
    page = web.get(f"/chat/{conversation}").text
    assert page.count("earlier messages were not sent") >= 1
    assert all(f"{n} word0" in page for n in range(4))  # every message is still stored and shown
    with sqlite3.connect(web.server.db_path) as db:
        statuses = [r[0] for r in db.execute("SELECT status FROM messages WHERE role = 'assistant'")]
    assert statuses == ["ok"] * 4


def test_the_page_shows_how_full_the_local_models_context_is(small_context: WebClient) -> None:
    web = small_context
    conversation = web.new_chat("local/tiny", max_tokens="4")
    fresh = web.get(f"/chat/{conversation}").text
    assert '<div class="context" id="context" role="status" aria-live="polite" hidden>' in fresh  # nothing used yet
    web.send(conversation, "how full is it")
    page = web.get(f"/chat/{conversation}").text
    used = re.search(r'data-context-tokens="(\d+)"', page)
    assert used is not None and 0 < int(used.group(1)) <= CONTEXT
    assert f'<option value="local/tiny" data-context="{CONTEXT}" selected>' in page
    percent = round(100 * int(used.group(1)) / CONTEXT)
    assert f"Context {int(used.group(1)):,} of {CONTEXT} tokens ({percent}%)" in page

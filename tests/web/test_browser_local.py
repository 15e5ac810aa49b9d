"""Loading and unloading a local model from the models page, and chatting with it (tiny test model).

Skipped where the onnxruntime-genai provider type is not registered or the tiny model cannot be built.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from minigate.gateway.plugins.loader import builtin_extensions
from tests.fakes.upstream import FakeUpstream
from tests.gateway_server import GatewayServer
from tests.web.browser import base_url, login, shoot
from tests.web.helpers import web_config

Page = pytest.importorskip("playwright.sync_api").Page


@pytest.fixture
def local_server(
    gateway_factory: Callable[..., GatewayServer],
    remote: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> GatewayServer:
    """The web test config plus a ``local`` onnxruntime-genai provider holding the tiny model."""
    assert builtin_extensions().providers.get("onnxruntime-genai") is not None, (
        "the onnxruntime-genai provider is built in"
    )
    pytest.importorskip("onnxruntime_genai")
    from tests.providers.onnx.tinymodel import build_tiny_model, tiny_model_dir

    cache = Path(os.environ.get("MINIGATE_TEST_CACHE") or Path.home() / ".cache" / "minigate-test")
    if not (tiny_model_dir(cache) / "genai_config.json").is_file():
        for tool in ("torch", "transformers", "tokenizers", "onnx", "onnx_ir"):
            pytest.importorskip(tool)
    models = tmp_path / "models"
    shutil.copytree(build_tiny_model(cache), models / "tiny")
    config = web_config(remote)
    config["models"]["providers"]["local"] = {"type": "onnxruntime-genai", "models_dir": str(models), "idle_ttl": None}
    monkeypatch.setenv("MINIGATE_ADMIN_PASSWORD", "web-admin-password-42")
    return gateway_factory(config)


@pytest.fixture
def local_page(browser: object, local_server: GatewayServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=base_url(local_server))  # type: ignore[attr-defined]
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    login(tab)
    yield tab
    context.close()


def _row(page: Page) -> object:
    return page.locator("tr", has=page.get_by_role("rowheader", name="tiny"))


def test_load_chat_and_unload_a_local_model(local_page: Page) -> None:
    page = local_page
    page.goto("/models")
    expect(_row(page).locator(".state")).to_have_text("available")
    _row(page).get_by_role("button", name="Load tiny", exact=True).click()
    expect(page.locator(".banner")).to_contain_text("load: local/tiny done")
    expect(_row(page).locator(".state")).to_have_text("loaded")
    expect(_row(page)).to_contain_text("rss_bytes")
    shoot(page, "models-local")
    page.goto("/chat")
    page.get_by_label("Model or agent").select_option("local/tiny")
    page.locator("#settings-panel summary").click()
    page.get_by_label("Max tokens").fill("12")  # the tiny model babbles: keep the answer short
    page.get_by_label("Message", exact=True).fill("hello tiny model")
    page.keyboard.press("Enter")
    answer = page.locator(".msg-assistant").last
    expect(answer.locator(".meta")).to_contain_text("answered by local/tiny")
    page.goto("/models")
    _row(page).get_by_role("button", name="Unload tiny", exact=True).click()
    expect(_row(page).locator(".state")).to_have_text("available")
    expect(page).to_have_url(re.compile(r"/models"))


def test_import_a_model_with_live_progress(local_page: Page, local_server: GatewayServer) -> None:
    page = local_page
    page.goto("/models")
    page.get_by_text("Pull or import a model").click()
    page.get_by_label("import from disk").check()
    source = next(Path(str(local_server.config.providers["local"][1].models_dir)).iterdir())
    page.get_by_label("Catalog name, or folder / .gguf file on the server").fill(str(source))
    page.get_by_label("Name for an imported model").fill("tiny-copy")
    page.get_by_role("button", name="Start").click()
    log = page.get_by_role("log", name="Progress")
    expect(log).to_contain_text("import " + str(source))
    expect(log.locator(".ok, .error")).to_contain_text("Done:", timeout=60_000)
    shoot(page, "models-import")
    page.reload()
    expect(page.get_by_role("rowheader", name="tiny-copy")).to_be_visible()

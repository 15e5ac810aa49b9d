"""The models page's Devices section and ``/v1/models``: where a provider's local models run and why, the plugins
found and the devices they offer, and the back end and device of each loaded model (the tiny model, ``auto``)."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.gateway_server import ADMIN_KEY
from tests.inprocess import InProcessGateway
from tests.providers.onnx.helpers import TINY, local_config
from tests.web.helpers import WebClient


def _config(models_dir: Path, **local: Any) -> dict[str, Any]:
    return local_config(models_dir, 256, **local)


def test_the_models_page_says_where_local_models_run_and_why(
    inprocess_factory: Callable[..., InProcessGateway],
    admin: Callable[[InProcessGateway], WebClient],
    models_dir: Path,
) -> None:
    gateway = inprocess_factory(_config(models_dir, execution_provider="auto"))
    web = admin(gateway)
    try:
        page = html.unescape(web.get("/models").text)
        assert '<h2 id="devices-h">Devices</h2>' in page
        assert "Runs on <strong>cpu CPU</strong>: auto: " in page
        assert "Devices here: CPU (CPUExecutionProvider" in page
        for line in ("onnxruntime-ep-openvino", "onnxruntime-ep-webgpu"):  # where installed (here, and in CI)
            if f"{line} " in page:
                assert f"(execution_provider '{line.removeprefix('onnxruntime-ep-')}'): registered, offers " in page
        answer = web.http.post(
            "/v1/chat/completions",
            json={"model": f"local/{TINY}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert answer.status_code == 200, answer.text
        models = web.http.get("/v1/models", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
        card = next(m for m in models["data"] if m["id"] == f"local/{TINY}")
        assert (card["minigate"]["execution_provider"], card["minigate"]["device"]) == ("cpu", "CPU")
    finally:
        web.close()


def test_a_back_end_that_cannot_be_had_is_shown_as_such(
    inprocess_factory: Callable[..., InProcessGateway],
    admin: Callable[[InProcessGateway], WebClient],
    models_dir: Path,
) -> None:
    gateway = inprocess_factory(_config(models_dir, execution_provider="auto", device="NPU"))
    web = admin(gateway)
    try:
        page = html.unescape(web.get("/models").text)
        assert "Cannot run: execution_provider 'auto' found no NPU here (devices: CPU (CPUExecutionProvider" in page
    finally:
        web.close()

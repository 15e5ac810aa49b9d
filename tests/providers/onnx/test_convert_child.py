"""Conversions run in a child process: torch and transformers never enter the gateway's process, and stopping
the gateway (SIGTERM at first start, a cancelled admin job) stops the conversion and leaves no staging folder.

The tiny model's Hugging Face folder goes through the model builder (about 5-10 s); the real default model's
first start, with the gateway's memory measured, is ``bench/bench_first_start.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

# What a gateway process runs at first start (minigate.gateway.cli._serve -> ensure_default_models), then what
# it holds: the conversion tools must not be among its modules.
_GATEWAY = """
import json, sys
from pathlib import Path
from minigate.gateway.models_cli import convert_in_child
status = convert_in_child(Path(sys.argv[1]), ["--quiet", "import", sys.argv[2], "fromhf"])
heavy = sorted(m for m in ("torch", "transformers", "onnx", "gguf", "safetensors") if m in sys.modules)
print(json.dumps({"status": status, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as a Hugging Face folder (config, weights, tokenizer), for the builder."""
    for tool in ("torch", "transformers", "tokenizers", "onnx", "onnx_ir", "safetensors"):
        pytest.importorskip(tool)
    from tests.providers.onnx import tinymodel

    folder = tmp_path_factory.mktemp("hf")
    tinymodel._write_tokenizer(folder)
    tinymodel._write_model(folder)
    return folder


def _gateway(models_dir: Path, hf: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _GATEWAY, str(models_dir), str(hf)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _wait_for(check: object, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_conversion_runs_in_a_child_and_leaves_no_tools_behind(hf_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    proc = _gateway(models, hf_dir)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"status": 0, "heavy": []}
    assert (models / "fromhf" / "genai_config.json").is_file()
    manifest = json.loads((models / "fromhf" / "manifest.json").read_text())
    assert manifest["precision"] == "int4" and manifest["source"]["kind"] == "hf-folder"


def test_sigterm_at_first_start_stops_the_conversion(hf_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    proc = _gateway(models, hf_dir)
    try:
        # The conversion has begun once its staging folder exists.
        _wait_for(lambda: models.is_dir() and any(p.name.startswith(".staging-") for p in models.iterdir()), 120)
        children = _children(proc.pid)
        assert len(children) == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "conversion stopped" in err
    assert not Path(f"/proc/{children[0]}").exists()
    assert list(models.iterdir()) == []  # no staging folder, no half-made model


async def test_a_cancelled_import_stops_its_child(hf_dir: Path, tmp_path: Path) -> None:
    from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    models = tmp_path / "models"
    models.mkdir()
    provider = OnnxProvider("local", OnnxProviderConfig(models_dir=str(models)))
    lines: list[str] = []
    task = asyncio.ensure_future(provider.import_model(str(hf_dir), "fromhf", on_progress=lines.append))
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".staging-") for p in models.iterdir()):
        assert time.monotonic() < deadline and not task.done(), lines
        await asyncio.sleep(0.05)
    mine = set(_children(os.getpid()))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(models.iterdir()) == []
    assert not any(_is_cli(pid) for pid in mine)
    assert any("Hugging Face folder" in line for line in lines)  # progress came through as it went


def _is_cli(pid: int) -> bool:
    try:
        return b"minigate.providers.onnx.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_first_start_converts_only_what_is_missing(
    tiny_model_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from minigate.gateway.models_cli import ensure_default_models
    from minigate.gateway.plugins.loader import builtin_extensions, configure
    from minigate.providers.onnx.convert import import_model
    from minigate.providers.onnx.progress import Progress

    models = tmp_path / "models"
    import_model(tiny_model_source, models, "smollm2-135m-instruct@fp32", progress=Progress(3, quiet=True))
    chain = {"primary": "local/smollm2-135m-instruct@fp32", "fallbacks": ["local/smollm2-135m-instruct@q4"]}
    raw = {
        "agents": {"defaults": {"model": chain}},
        "models": {"providers": {"local": {"type": "onnxruntime-genai", "models_dir": str(models)}}},
    }
    ensure_default_models(configure(raw, builtin_extensions(), env={}))
    # The precision the chain names is there (a bad reference is the provider's 400 later): nothing to convert.
    assert "converting" not in capsys.readouterr().err
    assert sorted(p.name for p in models.iterdir()) == ["smollm2-135m-instruct@fp32"]

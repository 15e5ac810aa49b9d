"""Plugin execution providers: finding the packages, the device probe, choosing a back end and device (``auto``
and explicit), and the errors that name the package or device to fix.

The choice is checked against probes written out here (machines with an NPU, a GPU, both, neither); the probe
itself runs for real (a child process registering every installed plugin with onnxruntime), including with a
broken plugin package made in a temporary folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from minigate.providers.onnx.device_choice import Choice, DeviceError, choose, report
from minigate.providers.onnx.devices import Device, Plugin, Probe, find_plugins, run_probe, run_probe_async

pytestmark = pytest.mark.fast

OPENVINO = "OpenVINOExecutionProvider"
CPU = Device(ep="CPUExecutionProvider", type="CPU", vendor="AMD")


def _machine(*types: str, builtin: dict[str, bool] | None = None) -> Probe:
    """A probe of a machine where the OpenVINO plugin offers devices of ``types`` (and WebGPU none)."""
    plugins = [
        Plugin(distribution="onnxruntime-ep-openvino", version="1.8.1", name="openvino", ep_names=[OPENVINO],
               library="/x/libopenvino_plugin.so", registered=True),
        Plugin(distribution="onnxruntime-ep-webgpu", version="0.4.0", name="webgpu",
               ep_names=["WebGpuExecutionProvider"], library="/x/libwebgpu.so", registered=True),
    ]  # fmt: skip
    devices = [CPU] + [Device(ep=OPENVINO, type=t, vendor="Intel", plugin="openvino") for t in types]
    return Probe(onnxruntime="1.32.0", plugins=plugins, devices=devices, builtin=builtin or {"cuda": False})


def test_auto_takes_an_npu_over_a_gpu_over_the_cpu() -> None:
    npu = choose("auto", None, _machine("CPU", "GPU", "NPU"))
    assert (npu.backend, npu.device, npu.ep) == ("openvino", "NPU", OPENVINO)
    assert npu.reason == "auto: onnxruntime-ep-openvino 1.8.1 offers an NPU (Intel), preferred over a GPU and the CPU"
    gpu = choose("auto", None, _machine("CPU", "GPU"))
    assert (gpu.backend, gpu.device) == ("openvino", "GPU")
    assert choose("auto", "GPU", _machine("GPU", "NPU")).device == "GPU"  # a device option narrows auto
    cuda = choose("auto", None, _machine("CPU", builtin={"cuda": True}))
    assert (cuda.backend, cuda.device, cuda.ep) == ("cuda", "GPU", None)


def test_auto_falls_back_to_the_cpu_and_says_why() -> None:
    # A plugin's CPU device does not win over onnxruntime's own CPU execution provider.
    for probe in (_machine(), _machine("CPU")):
        choice = choose("auto", None, probe)
        assert (choice.backend, choice.device, choice.ep) == ("cpu", "CPU", None)
        assert "no installed plugin offers a GPU or NPU" in choice.reason
        assert "onnxruntime-ep-webgpu 0.4.0: no device" in choice.reason
    bare = choose("auto", None, Probe(devices=[CPU]))
    wanted = "no plugin execution provider is installed (for Intel GPUs and NPUs: pip install onnxruntime-ep-openvino)"
    assert wanted in bare.reason
    with pytest.raises(DeviceError, match="found no NPU here"):
        choose("auto", "NPU", _machine("GPU"))


def test_an_explicit_plugin_and_device() -> None:
    choice = choose("OpenVINO", "npu", _machine("NPU"))
    assert (choice.backend, choice.device, choice.library) == ("openvino", "NPU", "/x/libopenvino_plugin.so")
    assert choice.options() == {"backend": "openvino", "device": "NPU", "ep": OPENVINO, "library": choice.library}
    assert choice.label == "openvino NPU"


@pytest.mark.parametrize(
    ("provider", "device", "message"),
    [
        ("openvino", None, 'execution_provider \'openvino\' needs a device: "CPU", "GPU" or "NPU"'),
        ("openvino", "NPU", "onnxruntime-ep-openvino 1.8.1 offers no NPU device on this machine (it offers: GPU;"),
        ("webgpu", "GPU", "onnxruntime-ep-webgpu 0.4.0 offers no GPU device on this machine (it offers: no device;"),
        ("migraphx", "GPU", "needs the onnxruntime-ep-migraphx package, which is not installed: pip install "),
        ("openvino", "TPU", "device must be one of CPU, GPU, NPU, not 'TPU'"),
    ],
)
def test_what_cannot_be_had_is_a_clear_error(provider: str, device: str | None, message: str) -> None:
    with pytest.raises(DeviceError) as caught:
        choose(provider, device, _machine("GPU"))
    assert message in str(caught.value)


def test_gpu_memory_as_a_share_of_the_device() -> None:
    probe = Probe(builtin={"cuda": True}, gpu_memory_bytes=8 << 30)
    assert choose("cuda", None, probe, "80%").gpu_memory_bytes == int((8 << 30) * 0.8)
    assert choose("cuda", None, probe, "2GiB").gpu_memory_bytes == 2 << 30
    assert choose("cuda", None, probe, 1 << 30).gpu_memory_bytes == 1 << 30
    with pytest.raises(DeviceError, match='nvidia-smi did not tell: give a size such as "6GiB"'):
        choose("cuda", None, Probe(builtin={"cuda": True}), "80%")
    on_cpu = choose("cpu", None, Probe(), "80%")
    assert on_cpu.gpu_memory_bytes is None and on_cpu.notes == ["gpu_memory '80%' is unused: the models run on the CPU"]
    auto = choose("auto", None, _machine("NPU"), "50%")
    assert auto.notes == ["gpu_memory '50%' is unused: openvino NPU takes no GPU memory limit"]


def test_the_probe_lists_the_cpu_and_every_installed_plugin() -> None:
    probe = run_probe()
    assert probe.error is None and probe.onnxruntime
    assert any(d.ep == "CPUExecutionProvider" and d.type == "CPU" for d in probe.devices)
    assert [p.distribution for p in probe.plugins] == [p.distribution for p in find_plugins()]
    for plugin in probe.plugins:  # what is installed here registers (on this machine: OpenVINO and WebGPU)
        assert plugin.registered and plugin.error is None, plugin
        assert plugin.library and Path(plugin.library).is_file()
    text = "\n".join(report(probe))
    assert "devices:\n  CPU (CPUExecutionProvider" in text and "auto would choose: " in text


def _broken_plugin(site: Path) -> None:
    """An ``onnxruntime-ep-broken`` package whose library is no library."""
    info = site / "onnxruntime_ep_broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-ep-broken\nVersion: 0.1\n")
    (info / "top_level.txt").write_text("onnxruntime_ep_broken\n")
    module = site / "onnxruntime_ep_broken"
    module.mkdir()
    (module / "libbroken.so").write_text("not a shared library")
    (module / "__init__.py").write_text(
        "import pathlib\n"
        "def get_library_path():\n    return str(pathlib.Path(__file__).parent / 'libbroken.so')\n"
        "def get_ep_names():\n    return ['BrokenExecutionProvider']\n"
    )


async def test_a_plugin_that_does_not_register_is_named_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _broken_plugin(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    probe = await run_probe_async()
    broken = probe.plugin("broken")
    assert broken is not None and broken.label == "onnxruntime-ep-broken 0.1"
    assert broken.error is not None and broken.error.startswith("registration failed: ")
    assert not broken.registered
    with pytest.raises(DeviceError, match=r"^onnxruntime-ep-broken 0\.1 cannot be used: registration failed"):
        choose("broken", "GPU", probe)
    fallback = choose("auto", None, probe)
    assert fallback.device == "CPU" and "onnxruntime-ep-broken 0.1: registration failed" in fallback.reason


def test_a_choice_round_trips_to_the_worker() -> None:
    choice = Choice(backend="cpu", device="CPU", reason="x")
    assert choice.options() == {"backend": "cpu", "device": "CPU", "ep": None, "library": None}

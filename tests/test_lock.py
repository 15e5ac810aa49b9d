"""The image's lock files (deploy/requirements-*.lock): complete, hashed, current, and installable.

No container engine runs here, so the image's builder stage is mirrored: the Dockerfile's builder COPY lines are
copied into a temporary folder and its RUN lines run there into a temporary venv, with pip reaching only its
default index (no local wheel folder or mirror), so the locked hashes are proven against the registry's files.
That real install is the cpu lock (about 100 MB) and the torchcpu lock (PyTorch's CPU-only torch: about 1.5 GB
installed, under a minute here); the other torch-sized locks are checked with `pip install --dry-run --platform`:
for x86_64 and aarch64, every pin must have a wheel for CPython 3.11 on Linux whose published sha256 is in the
lock, and the metadata of those wheels must need nothing the lock lacks.

PyTorch's CPU-only wheel is not on PyPI: the torchcpu tests take it from TORCH_CPU_WHEELS (default /opt/wheels,
the folder scripts/lock.sh hashed it from, as a user's PIP_FIND_LINKS would name it) and fail, never skip, when
it is not there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("lock_inputs", ROOT / "deploy" / "lock_inputs.py")
assert _spec is not None and _spec.loader is not None
lock_inputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_inputs)

VARIANTS: tuple[str, ...] = lock_inputs.VARIANTS
TORCH_CPU: str = lock_inputs.TORCH_CPU_VARIANT
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")
TORCH_CPU_WHEELS = Path(os.environ.get("TORCH_CPU_WHEELS", "/opt/wheels"))
# What PyPI's Linux torch needs and PyTorch's CPU-only build does not: NVIDIA's CUDA wheels and triton.
CUDA_ONLY = re.compile(r"nvidia-.*|cuda-.*|triton")


class Pin:
    def __init__(self, name: str, version: str, hashes: list[str], marker: str | None, via: list[str]) -> None:
        self.name, self.version, self.hashes, self.marker, self.via = name, version, hashes, marker, via


def parse_lock(path: Path) -> dict[str, Pin]:
    """A lock's pins by normalised name; fails on anything but `name==version [; marker] --hash=...` entries."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    logical: list[str] = []
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#"):
            if current is not None:
                current.via.append(raw.strip("# ").strip())
            continue
        logical.append(raw.rstrip("\\").strip())
        if raw.endswith("\\"):
            continue
        line, logical = " ".join(logical).strip(), []
        if not line:
            continue
        assert not line.startswith("-"), f"{path.name}: an option line: {line!r}"
        requirement, _, options = line.partition(" --hash=")
        options = "--hash=" + options
        spec, _, marker = requirement.partition(";")
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", spec.strip())
        assert match, f"{path.name}: not an exact pin: {line!r}"
        hashes = HASH.findall(options)
        assert hashes and len(hashes) == options.count("--hash="), f"{path.name}: {spec} lacks a sha256 hash"
        current = Pin(canonicalize_name(match[1]), match[2], hashes, marker.strip() or None, [])
        assert current.name not in pins, f"{path.name}: {current.name} pinned twice"
        pins[current.name] = current
    return pins


@pytest.mark.parametrize("variant", VARIANTS)
def test_lock_pins_every_requirement_with_hashes(variant: str) -> None:
    path = lock_inputs.lock_path(variant)
    text = path.read_text()
    # No index, mirror or URL of any kind: where files come from is the builder's business, not the lock's.
    for needle in ("://", "--index-url", "--extra-index-url", "--find-links", "--trusted-host"):
        assert needle not in text, f"{path.name} names an index or URL ({needle}): scripts/lock.sh writes none"
    pins = parse_lock(path)
    inputs = [Requirement(r) for r in lock_inputs.requirements(variant)]
    for requirement in inputs:
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{path.name} does not pin {requirement}: run scripts/lock.sh"
        assert requirement.specifier.contains(Version(pin.version), prereleases=True), (
            f"{path.name} pins {pin.name}=={pin.version}, pyproject.toml asks for {requirement}: run scripts/lock.sh"
        )
    # The lock's own record of its direct requirements is exactly today's input: a requirement dropped from
    # pyproject.toml leaves no stale pin behind.
    direct = {name for name, pin in pins.items() if any(via.endswith(f"-r {variant}.in") for via in pin.via)}
    assert direct == {canonicalize_name(r.name) for r in inputs}, f"{path.name} is stale: run scripts/lock.sh"
    assert "torch" in pins if "-convert" in variant else "torch" not in pins


def _torch_cpu_wheel() -> Path:
    """PyTorch's CPU-only wheel of the pinned torch, from TORCH_CPU_WHEELS; a clear failure when it is missing."""
    (requirement,) = [r for r in lock_inputs.requirements(TORCH_CPU) if r.startswith("torch==")]
    name = f"{requirement.replace('==', '-')}-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel = TORCH_CPU_WHEELS / name
    if not wheel.is_file():
        pytest.fail(
            f"no {wheel}: the {TORCH_CPU} tests need PyTorch's CPU-only wheel {name} (set TORCH_CPU_WHEELS to the "
            "folder that holds it; it is on PyTorch's CPU-only wheel index, not on PyPI)"
        )
    return wheel


def test_the_torchcpu_lock_is_cpu_convert_with_the_cpu_only_torch() -> None:
    """The CPU-only torch, pinned to the wheel's sha256, in place of PyPI's; everything else pinned alike."""
    pypi, cpu = parse_lock(lock_inputs.lock_path("cpu-convert")), parse_lock(lock_inputs.lock_path(TORCH_CPU))
    torch = cpu["torch"]
    assert Version(torch.version).local == "cpu", f"{TORCH_CPU}: torch=={torch.version} is not a CPU-only build"
    assert Version(torch.version).public == pypi["torch"].version, (torch.version, pypi["torch"].version)
    digest = hashlib.sha256(_torch_cpu_wheel().read_bytes()).hexdigest()
    assert torch.hashes == [digest], f"{TORCH_CPU} pins torch to {torch.hashes}, the wheel's sha256 is {digest}"
    cuda = sorted(name for name in cpu if CUDA_ONLY.fullmatch(name))
    assert not cuda, f"{TORCH_CPU} pins CUDA packages: {cuda}"
    # PyPI's torch does bring them (or this lock would be pointless), and they are all that is left out.
    assert {name for name in pypi if CUDA_ONLY.fullmatch(name)} == set(pypi) - set(cpu), set(pypi) ^ set(cpu)
    for name, pin in cpu.items():
        if name != "torch":
            assert (pin.version, pin.hashes) == (pypi[name].version, pypi[name].hashes), (
                f"{name}: {TORCH_CPU} and cpu-convert pin it differently: run scripts/lock.sh"
            )


def test_the_cpu_only_torch_wheel_matches_its_pin(tmp_path: Path) -> None:
    """pip accepts the CPU-only wheel under the lock's hash, and refuses another file of the same name."""
    torch = parse_lock(lock_inputs.lock_path(TORCH_CPU))["torch"]
    wheel = _torch_cpu_wheel()
    requirement = tmp_path / "torch.txt"
    requirement.write_text(f"torch=={torch.version} {' '.join(f'--hash=sha256:{h}' for h in torch.hashes)}\n")
    impostor = tmp_path / "impostor"
    impostor.mkdir()
    with zipfile.ZipFile(impostor / wheel.name, "w") as fake:
        fake.writestr(
            f"torch-{torch.version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: torch\nVersion: {torch.version}\n",
        )

    def download(folder: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary=:all:"),
                *("--no-index", "--find-links", str(folder), "-d", str(tmp_path / "got"), "-r", str(requirement)),
            ],
            env=_registry_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    refused = download(impostor)
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr, refused.stderr
    accepted = download(wheel.parent)
    assert accepted.returncode == 0, accepted.stderr
    assert (tmp_path / "got" / wheel.name).is_file()


def test_the_cuda_locks_swap_the_engine_for_its_cuda_build() -> None:
    cpu, cuda = parse_lock(lock_inputs.lock_path("cpu")), parse_lock(lock_inputs.lock_path("cuda"))
    assert "onnxruntime-genai" not in cuda and "onnxruntime" not in cuda
    assert cuda["onnxruntime-genai-cuda"].version == cpu["onnxruntime-genai"].version
    assert "onnxruntime-gpu" in cuda and "nvidia-cudnn-cu13" in cuda


def test_the_dockerfile_installs_only_the_locks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    builder = dockerfile.split("FROM ${PYTHON_IMAGE} AS builder", 1)[1].split("\nFROM ", 1)[0]
    assert "COPY deploy/install.sh deploy/requirements-*.lock ./deploy/" in builder
    runs = [line for line in builder.splitlines() if line.startswith("RUN ")]
    assert runs == ["RUN sh deploy/install.sh /opt/minigate deps", "RUN sh deploy/install.sh /opt/minigate minigate"]
    # The default build needs nothing but PyPI: PyPI's torch unless MINIGATE_TORCH=cpu is asked for.
    assert "ARG MINIGATE_TORCH=pypi\n" in builder
    assert "pip install" not in dockerfile.replace("`pip install --require-hashes --no-deps`", "")
    script = (ROOT / "deploy" / "install.sh").read_text()
    installs = [line.strip() for line in script.splitlines() if 'pip" install' in line]
    assert installs == [
        'if ! "$venv/bin/pip" install --require-hashes --no-deps -r "$lock"; then',
        '"$venv/bin/pip" install --no-deps --no-build-isolation --no-index .',
    ]
    assert "variant=$accelerator${extras:+-$extras}\n" in script and "variant=$variant-torchcpu\n" in script
    assert "lock=deploy/requirements-$variant.lock" in script
    for variant in VARIANTS:
        assert lock_inputs.lock_path(variant).is_file(), f"no lock for {variant}: run scripts/lock.sh"


def _registry_env(**extra: str) -> dict[str, str]:
    """pip with no config file and no index, mirror or wheel folder of its own: only its default index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "MINIGATE_", "VIRTUAL_ENV"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    if os.environ.get("PIP_CERT"):
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    return env


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"MINIGATE_EXTRAS": "test"}, "requirements-cpu-test.lock"),
        ({"MINIGATE_TORCH": "rocm"}, "MINIGATE_TORCH must be pypi or cpu"),
        ({"MINIGATE_TORCH": "cpu", "MINIGATE_ACCELERATOR": "cuda"}, "locked for MINIGATE_ACCELERATOR=cpu on x86_64"),
    ],
)
def test_install_script_refuses_a_choice_without_a_lock(tmp_path: Path, settings: dict[str, str], message: str) -> None:
    result = subprocess.run(
        ["sh", str(ROOT / "deploy" / "install.sh"), str(tmp_path / "venv")],
        cwd=ROOT,
        env=_registry_env(**settings),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "venv").exists()


def test_install_script_says_where_the_cpu_only_torch_comes_from(tmp_path: Path) -> None:
    """MINIGATE_TORCH=cpu where pip finds no file: pip's failure, then what the build needs."""
    empty = tmp_path / "wheels"
    empty.mkdir()
    result = subprocess.run(
        ["sh", str(ROOT / "deploy" / "install.sh"), str(tmp_path / "venv"), "deps"],
        cwd=ROOT,
        env=_registry_env(MINIGATE_TORCH="cpu", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    hint = (
        "PIP_EXTRA_INDEX_URL to PyTorch's CPU-only wheel index or PIP_FIND_LINKS to a folder holding torch==2.13.0+cpu"
    )
    assert f"requirements-{TORCH_CPU}.lock pins PyTorch's CPU-only torch" in result.stderr, result.stderr
    assert hint in result.stderr.replace("\n", " "), result.stderr


@pytest.mark.parametrize("variant", ["cpu", TORCH_CPU])
def test_the_builder_stage_installs_the_lock(variant: str, tmp_path: Path) -> None:
    """The Dockerfile's builder stage: its COPY lines, then its RUN lines, for real.

    `cpu` is MINIGATE_EXTRAS="" (the serving image). The torchcpu variant is the default extras with
    MINIGATE_TORCH=cpu and PIP_FIND_LINKS naming the folder with PyTorch's CPU-only wheel, as a user would build
    it; every other file comes from the registry.
    """
    dockerfile = (ROOT / "Dockerfile").read_text()
    builder = dockerfile.split("FROM ${PYTHON_IMAGE} AS builder", 1)[1].split("\nFROM ", 1)[0]
    src, venv = tmp_path / "src", tmp_path / "opt-minigate"
    src.mkdir()
    settings = {"MINIGATE_EXTRAS": "", "MINIGATE_ACCELERATOR": "cpu"}
    if variant == TORCH_CPU:
        wheels = _torch_cpu_wheel().parent
        settings = {"MINIGATE_ACCELERATOR": "cpu", "MINIGATE_TORCH": "cpu", "PIP_FIND_LINKS": str(wheels)}
    env = _registry_env(**settings, PYTHON=shutil.which("python3") or "python3")
    for line in builder.splitlines():
        if line.startswith("COPY "):
            *sources, target = line.split()[1:]
            destination = src / target
            for pattern in sources:
                matches = sorted(ROOT.glob(pattern))
                assert matches, f"the Dockerfile copies {pattern}, which does not exist"
                for found in matches:
                    if found.is_dir():
                        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                        shutil.copytree(found, destination, ignore=ignore, dirs_exist_ok=True)
                    else:
                        folder = destination if target.endswith("/") else destination.parent
                        folder.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(found, folder / found.name if target.endswith("/") else destination)
        elif line.startswith("RUN "):
            command = line[4:].replace("/opt/minigate", str(venv))
            result = subprocess.run(command, shell=True, cwd=src, env=env, capture_output=True, text=True, check=False)
            assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            if line.endswith(" minigate"):
                assert f"installed minigate from deploy/requirements-{variant}.lock" in result.stdout, result.stdout
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    versions = {canonicalize_name(d["name"]): d["version"] for d in json.loads(installed.stdout)}
    pins = parse_lock(lock_inputs.lock_path(variant))
    for name, pin in pins.items():
        assert versions.get(name) == pin.version, f"{name}: installed {versions.get(name)}, locked {pin.version}"
    assert set(versions) - set(pins) <= {"minigate", "pip"}, set(versions) - set(pins)
    if variant == TORCH_CPU:
        assert versions["torch"].endswith("+cpu") and not any(CUDA_ONLY.fullmatch(name) for name in versions)
        probe = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import torch; print(torch.__version__, torch.version.cuda, int(torch.ones(3).sum()))",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert probe.stdout.split() == [versions["torch"], "None", "3"], probe.stdout + probe.stderr
    check = subprocess.run(
        [str(venv / "bin" / "minigate"), "config", "check", str(ROOT / "deploy" / "minigate.json")],
        cwd=tmp_path,
        env={**env, "MINIGATE_EXECUTION_PROVIDER": "cpu", "MINIGATE_DATABASE_URL": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0 and ": ok" in check.stdout, check.stdout + check.stderr

    if variant != "cpu":
        return
    # The hashes are what pip goes by: the same lock with one package's hash changed is refused.
    tampered = tmp_path / "tampered.lock"
    idna = pins["idna"]
    tampered.write_text(f"idna=={idna.version} --hash=sha256:{'0' * 64}\n")
    refused = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--require-hashes",
            "--no-deps",
            "--dry-run",
            "--ignore-installed",
            *("--target", str(tmp_path / "t"), "-r", str(tampered)),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr, refused.stderr


def _platforms(arch: str) -> list[str]:
    """pip's tags for --platform on Debian bookworm (glibc 2.36): pip does not widen a --platform by itself."""
    oldest = 5 if arch == "x86_64" else 17
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(36, oldest - 1, -1)]
    tags += [f"manylinux2014_{arch}", f"linux_{arch}"]
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return [option for tag in tags for option in ("--platform", tag)]


def _marker_env(arch: str, extra: str) -> dict[str, str]:
    return {
        "implementation_name": "cpython",
        "implementation_version": "3.11.9",
        "os_name": "posix",
        "platform_machine": arch,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": "3.11.9",
        "python_version": "3.11",
        "sys_platform": "linux",
        "extra": extra,
    }


@pytest.mark.parametrize(("variant", "arch"), [(v, a) for v in VARIANTS for a in lock_inputs.arches(v)])
def test_lock_installs_on_its_platform(variant: str, arch: str, tmp_path: Path) -> None:
    path = lock_inputs.lock_path(variant)
    report = tmp_path / "report.json"
    # PyTorch's CPU-only torch is not on PyPI: a wheel folder, as the Dockerfile's PIP_FIND_LINKS would name it.
    wheels = {"PIP_FIND_LINKS": str(_torch_cpu_wheel().parent)} if variant == TORCH_CPU else {}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            *(*_platforms(arch), "--python-version", "3.11", "--target", str(tmp_path / "t"), "--report", str(report)),
            "-q",
            "-r",
            str(path),
        ],
        env=_registry_env(**wheels),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    chosen = {canonicalize_name(i["metadata"]["name"]): i for i in installs}
    pins = parse_lock(path)
    assert set(chosen) == set(pins)
    for name, item in chosen.items():
        assert item["metadata"]["version"] == pins[name].version
        assert item["download_info"]["archive_info"]["hashes"]["sha256"] in pins[name].hashes
    # What those wheels' metadata needs, from the lock's inputs down, is in the lock, and nothing more is.
    needed: set[str] = set()
    queue = [(Requirement(r), "") for r in lock_inputs.requirements(variant)]
    seen: set[tuple[str, str]] = set()
    while queue:
        requirement, extra = queue.pop()
        if requirement.marker is not None and not Marker(str(requirement.marker)).evaluate(_marker_env(arch, extra)):
            continue
        name = canonicalize_name(requirement.name)
        assert name in chosen, f"{path.name} lacks {requirement} on {arch}"
        version = Version(chosen[name]["metadata"]["version"])
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} breaks {requirement}"
        needed.add(name)
        for wanted in ["", *requirement.extras]:
            if (name, wanted) not in seen:
                seen.add((name, wanted))
                requires = chosen[name]["metadata"].get("requires_dist", [])
                queue += [(Requirement(r), wanted) for r in requires]
    assert needed == set(chosen), f"{path.name} pins what nothing needs on {arch}: {set(chosen) - needed}"

"""x86_64-only pins of a lock resolved for x86_64 and aarch64 (scripts/lock.sh).

    python3 deploy/lock_markers.py VARIANT.in X86_64.txt COMPARE.txt

A requirement of VARIANT.in marked ``platform_machine == 'x86_64'`` resolves on x86_64 only. X86_64.txt (uv's
output for x86_64) gets the marker on that package's pin line, in place; COMPARE.txt is X86_64.txt without those
pins, which is what the aarch64 resolution must equal. Standard library only, like deploy/lock_inputs.py.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MARKER = 'platform_machine == "x86_64"'
_X86_ONLY = re.compile(r"""^([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*;\s*platform_machine\s*==\s*['"]x86_64['"]\s*$""")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def x86_only(requirements: str) -> set[str]:
    """Names of the requirements marked ``platform_machine == 'x86_64'`` (and nothing else)."""
    return {_name(m.group(1)) for line in requirements.splitlines() if (m := _X86_ONLY.match(line.strip()))}


def split(lock: str, names: set[str]) -> tuple[str, str]:
    """``(lock with the marker on those names' pin lines, lock without their entries)``."""
    marked: list[str] = []
    kept: list[str] = []
    dropping = False
    for line in lock.splitlines(keepends=True):
        pin = _PIN.match(line)
        if pin is not None:
            dropping = _name(pin.group(1)) in names
            if dropping:
                tail = " \\\n" if line.rstrip().endswith("\\") else "\n"
                line = f"{pin.group(0)} ; {MARKER}{tail}"
        elif not line.startswith((" ", "\t")):
            dropping = False
        marked.append(line)
        if not dropping:
            kept.append(line)
    return "".join(marked), "".join(kept)


def main(argv: list[str]) -> int:
    requirements, lock, compare = (Path(a) for a in argv)
    marked, kept = split(lock.read_text(), x86_only(requirements.read_text()))
    lock.write_text(marked)
    compare.write_text(kept)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

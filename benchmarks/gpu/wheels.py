"""The GPU check's pinned packages (``wheels.txt``): which this Python lacks, and how to fetch them.

    python benchmarks/gpu/wheels.py missing   # requirements not installed at their pinned version
    python benchmarks/gpu/wheels.py fetch     # download/build every wheel into benchmarks/gpu/wheels/

``fetch`` runs the two commands README.md documents: ``pip download`` of the binary wheels for CPython 3.12
on x86-64 Linux, and ``pip wheel`` for the two packages published as source only (marked ``# sdist``).
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def requirements(path: Path = HERE / "wheels.txt") -> list[tuple[str, bool]]:
    """``[(name==version, is_sdist)]`` from ``path`` (comments and blank lines skipped)."""
    out = []
    for line in path.read_text().splitlines():
        req = line.split("#", 1)[0].strip()
        if req:
            if "==" not in req:
                raise ValueError(f"{path}: {line!r} is not pinned as name==version")
            out.append((req, "# sdist" in line))
    return out


def missing(reqs: list[tuple[str, bool]]) -> list[str]:
    """The requirements whose package is absent or at another version in this Python."""
    out = []
    for req, _ in reqs:
        name, version = req.split("==")
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != version:
            out.append(req)
    return out


def fetch(reqs: list[tuple[str, bool]], dest: Path = HERE / "wheels") -> None:
    binary = [r for r, sdist in reqs if not sdist]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *platforms, "-d", str(dest), *binary], check=True)  # fmt: skip
    for req, sdist in reqs:
        if sdist:  # DS_BUILD_OPS=0: DeepSpeed compiles nothing now (its ops are JIT-built when used)
            env = {**__import__("os").environ, "DS_BUILD_OPS": "0"}
            subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), req],
                           check=True, env=env)  # fmt: skip


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "missing"
    if command == "missing":
        print(" ".join(missing(requirements())))
    elif command == "fetch":
        fetch(requirements())
    else:
        sys.exit(f"usage: {sys.argv[0]} missing|fetch")

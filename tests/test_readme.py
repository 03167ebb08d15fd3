"""README stays true: its two commands are what CI runs, and its layout tree names real paths."""

from __future__ import annotations

import re

from train_helpers import REPO

README = (REPO / "README.md").read_text()
CI = (REPO / ".ci" / "run").read_text()


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_setup_and_test_commands():
    blocks = _bash_blocks()
    setup = next(b for b in blocks if "pip install" in b and "python train.py" in b)
    tests = next(b for b in blocks if "pytest" in b)
    assert "torch==2.13.0" in setup and "-c constraints-cpu.txt" in setup
    assert README.index(setup) < README.index(tests)


def test_ci_runs_the_readme_test_command_and_install_steps():
    tests = next(b for b in _bash_blocks() if "pytest" in b).strip()
    test_cmd = tests.split("&&", 1)[1].strip()  # after activating the venv
    assert test_cmd in CI
    setup = next(b for b in _bash_blocks() if "python train.py" in b).strip()
    for step in setup.split("&&")[:-1]:  # every install step, not the training run
        step = step.strip()
        assert step.replace("pip install", "pip install -q") in CI or step in CI, step


def test_layout_tree_names_existing_paths():
    tree = README.split("## Layout", 1)[1].split("```")[1]
    for line in tree.splitlines():
        entry = line.split()[0] if line.strip() else ""
        if entry.endswith("/") or entry.endswith(".py"):
            top = [
                p
                for p in (REPO / entry, REPO / "prefdistill" / entry, REPO / "configs" / entry)
                if p.exists()
            ]
            anywhere = entry.endswith(".py") and any((REPO / "prefdistill").rglob(entry))
            assert top or anywhere, f"README layout names {entry!r}, which does not exist"

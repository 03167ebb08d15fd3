"""Every usage line the project prints composes: the ``python train.py ...`` (``generate.py``,
``evaluate.py``) lines of the config headers and of README.md and docs/*.md.

A usage line is a promise to a reader; a renamed key or group breaks it silently unless composing
it is a test. Lines run as Hydra would compose them (multirun sweeps take their first value), so a
group must be named concretely (``model=tiny``; ``model=<student>`` fails); a placeholder can only
stand for a free string such as a run folder (``run_dir=logs/train/runs/<time>``).
"""

from __future__ import annotations

import re
import shlex

import pytest
from omegaconf import OmegaConf
from train_helpers import CONFIGS, REPO, compose_train

APPS = {"train.py": "train", "generate.py": "generate", "evaluate.py": "eval",
        "pd-train": "train", "pd-generate": "generate", "pd-eval": "eval"}  # fmt: skip
_COMMAND = re.compile(r"(?:python\s+|^|\s)(train\.py|generate\.py|evaluate\.py|pd-train|pd-generate|pd-eval)\b(.*)")


def _joined(lines: list[str]) -> list[str]:
    """Lines with their backslash continuations joined."""
    out, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    return out


def _config_lines() -> list[tuple[str, str]]:
    found = []
    for path in sorted(CONFIGS.rglob("*.yaml")):
        comments = [line.lstrip("#") for line in path.read_text().splitlines() if line.lstrip().startswith("#")]
        for line in _joined(comments):
            if re.search(r"python\s+(train|generate|evaluate)\.py", line):
                found.append((path.relative_to(REPO).as_posix(), line.strip()))
    return found


def _doc_lines() -> list[tuple[str, str]]:
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            for line in _joined(block.splitlines()):
                for command in line.split("&&"):
                    if re.search(r"python\s+(train|generate|evaluate)\.py|^\s*pd-(train|generate|eval)\b", command):
                        found.append((path.relative_to(REPO).as_posix(), command.strip()))
    return found


def _overrides(line: str) -> tuple[str, list[str]]:
    """The app's config name and the override list of a usage line (comment and flags dropped)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    match = _COMMAND.search(line.split("  #")[0].split(" # ")[0])
    assert match, line
    words = [w for w in shlex.split(match.group(2)) if not w.startswith("-")]
    words = [re.sub(r"<[^<>\s]+>", "placeholder", w) for w in words]  # <run>: a free string stands in
    parsed = OverridesParser.create().parse_overrides(words)
    overrides = []
    for word, override in zip(words, parsed):
        if override.is_sweep_override():  # a multirun: compose its first job
            first = next(iter(override.sweep_string_iterator()))
            overrides.append(f"{override.get_key_element()}={first}")
        else:
            overrides.append(word)
    return APPS[match.group(1)], overrides


LINES = _config_lines() + _doc_lines()


def test_usage_lines_are_found():
    files = {f for f, _ in LINES}
    assert "README.md" in files and any(f.startswith("configs/method/") for f in files), files


@pytest.mark.parametrize("source,line", LINES, ids=[f"{f}:{i}" for i, (f, _) in enumerate(LINES)])
def test_usage_line_composes(source, line, tmp_path):
    config_name, overrides = _overrides(line)
    cfg = compose_train(tmp_path, overrides, config_name=config_name)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves

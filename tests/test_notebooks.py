"""Notebooks are committed without outputs, and each one runs on the results of a tiny sweep.

The sweep is a real 2-job multirun (tiny model, 3 steps, the default logger: W&B offline and the step
history in ``csv/metrics.csv``) made in a temporary folder; each notebook runs in a kernel of this
interpreter, with matplotlib's Agg backend, pointed at it through ``PREFDISTILL_RESULTS``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import REPO

from prefdistill import analysis

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
SWEEP = [
    "model=tiny",
    "method.beta=0.1,0.5",
    "trainer.max_steps=3",
    "data.max_samples=16",
    "data.batch_size=4",
    "trainer.limit_val_batches=1",
    "save_model=false",
]


def test_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {
        "sweep_metrics.ipynb",
        "training_curves.ipynb",
        "compare_methods.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i}: outputs"
    assert "/work" not in path.read_text() and "/tmp" not in path.read_text()


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """``python train.py -m model=tiny method.beta=0.1,0.5 ...``; returns the multirun folder."""
    root = tmp_path_factory.mktemp("notebook_runs")
    env = {
        **os.environ,
        "PREFDISTILL_ROOT": str(root),
        "PREFDISTILL_CACHE": str(root / "cache"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.run([sys.executable, "train.py", "-m", *SWEEP], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = sorted((root / "logs" / "train" / "multiruns").iterdir())
    runs = analysis.find_runs(sweep)
    assert len(runs) == 2 and all((run / analysis.HISTORY_FILE).is_file() for run in runs)
    return sweep


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec running this interpreter (not whatever ``python3`` spec a machine has)."""
    spec = tmp_path / "jupyter" / "kernels" / "prefdistill-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "test", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    return "prefdistill-test"


def _stdout(nb) -> str:
    return "".join(
        out.get("text", "") + "".join(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_a_tiny_sweep(path, tiny_sweep, kernel, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    figures = tmp_path / "figures"
    monkeypatch.setenv("PREFDISTILL_RESULTS", str(tiny_sweep))
    monkeypatch.setenv("PREFDISTILL_FIGURES", str(figures))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        nb, kernel_name=kernel, timeout=300, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()  # raises CellExecutionError, with the traceback, if a cell fails
    out = _stdout(nb)
    assert str(tiny_sweep) in out and "2 runs; swept: ['method.beta']" in out
    if path.name == "sweep_metrics.ipynb":
        assert (figures / "sweep_method.beta.png").stat().st_size > 10_000
    elif path.name == "training_curves.ipynb":
        assert "0_method.beta=0.1: 5 logged rows, last step 3" in out  # val before, 3 train steps, val after
        assert (figures / "training_curves.png").stat().st_size > 10_000
    elif path.name == "compare_methods.ipynb":
        table = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line[:2] == "| "]
        assert table[0][:4] == ["Run", "Method", "Model", "beta"]
        assert [row[:4] for row in table[1:]] == [
            ["0_method.beta=0.1", "dpo", "tiny", "0.100"],
            ["1_method.beta=0.5", "dpo", "tiny", "0.500"],
        ]
        assert "no eval_results.json" in out


@pytest.mark.slow
def test_the_documented_headless_command_runs_every_notebook(tiny_sweep, tmp_path):
    """docs/usage.md's ``jupyter execute`` line (what the dev extra installs), typed from the project folder with
    a relative results folder: the kernels run in notebooks/, and still find it; figures go to <results>/figures."""
    usage = (REPO / "docs" / "usage.md").read_text()
    (line,) = [
        line for line in usage.splitlines() if "jupyter execute" in line and line.startswith("PREFDISTILL")
    ]
    results = os.path.relpath(tiny_sweep, REPO)
    command = line.replace("logs/train/multiruns/<time>", results)
    notebooks = re.findall(r"notebooks/\S+\.ipynb", command)
    assert sorted(notebooks) == sorted(f"notebooks/{p.name}" for p in NOTEBOOKS)
    bin_dir = str(
        Path(sys.executable).parent
    )  # the dev extra's `jupyter`, and this interpreter for the kernel
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PWD": str(REPO),
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    env.pop("PREFDISTILL_FIGURES", None)
    proc = subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"sweep_method.beta.png", "training_curves.png"} <= {
        p.name for p in (tiny_sweep / "figures").iterdir()
    }

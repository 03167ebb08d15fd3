"""Cluster launchers: the SLURM launcher's wiring to Lightning's SLURM environment (and the sbatch
script submitit writes from it), and a real two-job multirun through submitit's local launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from train_helpers import REPO, compose_train

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

MULTINODE = ["hydra/launcher=slurm", "hardware=multinode"]


@pytest.mark.parametrize("sizes", [[], ["hardware.nodes=4", "hardware.gpus_per_node=4"]], ids=["2x8", "4x4"])
def test_slurm_launcher_runs_one_task_per_gpu_on_every_node(tmp_path, monkeypatch, sizes):
    from lightning.fabric.plugins.environments import SLURMEnvironment

    cfg = compose_train(tmp_path, MULTINODE + sizes)
    launcher, trainer = cfg.hydra.launcher, cfg.trainer
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == trainer.devices == cfg.hardware.gpus_per_node
    assert launcher.nodes == trainer.num_nodes == cfg.hardware.nodes
    assert launcher.partition is None and launcher.timeout_min > 0
    # Lightning accepts the job SLURM would start from these numbers ...
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_NTASKS", str(launcher.tasks_per_node * launcher.nodes))
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", str(launcher.tasks_per_node))
    monkeypatch.setenv("SLURM_NNODES", str(launcher.nodes))
    environment = SLURMEnvironment()
    environment.validate_settings(num_devices=trainer.devices, num_nodes=trainer.num_nodes)
    # ... and SLURM's warning signal is the one Lightning saves a checkpoint and requeues on
    name, delay = launcher.additional_parameters.signal.split("@")
    assert getattr(signal, f"SIG{name}") == environment.requeue_signal == signal.SIGUSR1
    assert int(delay) == launcher.signal_delay_s > 0


def test_slurm_launcher_writes_the_sbatch_script(tmp_path, monkeypatch):
    """The submitit SLURM launcher, run up to submission: its sbatch header carries the wiring."""
    import submitit
    from hydra.utils import instantiate

    fake_bin = tmp_path / "bin"  # submitit's SLURM executor looks for srun on PATH
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    scripts = []

    def submit(self, fn, *iterables):  # capture the script instead of calling sbatch
        scripts.append(self._executor._make_submission_file_text("python -m submitit.core._submit", "0"))
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit)
    cfg = compose_train(tmp_path, MULTINODE + ["hydra.launcher.partition=gpu"])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    launcher.launch([["method.beta=0.1"]], initial_job_idx=0)
    (script,) = scripts
    for flag in ["--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu",
                 "--signal=USR1@120", "--time=1440"]:  # fmt: skip
        assert f"#SBATCH {flag}\n" in script, (flag, script)
    assert "USR2" not in script


@pytest.mark.slow
def test_submitit_local_multirun_runs_two_jobs(tmp_path):
    env = {**os.environ, "PREFDISTILL_ROOT": str(tmp_path), "PREFDISTILL_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "train.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
           "model=tiny", "logger=none", "method.beta=0.1,0.5", "trainer.max_steps=2", "data.max_samples=8",
           "data.batch_size=4", "trainer.limit_val_batches=1", "save_model=false"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").glob("*")
    assert (sweep / ".submitit").is_dir(), "the jobs went through submitit"
    jobs = sorted(p for p in sweep.iterdir() if p.name[:1].isdigit())
    assert [p.name for p in jobs] == ["0_method.beta=0.1", "1_method.beta=0.5"]  # named in the job's process
    assert (sweep / "summary.md").is_file()
    betas = set()
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["global_step"] == 2, job
        betas.add(OmegaConf.load(job / "config_resolved.yaml").method.beta)
    assert betas == {0.1, 0.5}

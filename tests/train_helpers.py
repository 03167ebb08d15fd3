"""Helpers for tests that compose the real Hydra train config (imported by name: unique module)."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

TINY_OVERRIDES = [
    "model=tiny",
    "hardware=cpu",
    "logger=none",
    "data.max_samples=16",
    "data.batch_size=4",
    "trainer.max_steps=2",
    "trainer.limit_val_batches=1",
    "callbacks.model_checkpoint.every_n_train_steps=1",
]


# Every train/loss* of a tiny run stays within this. The largest honest values are the squared losses at
# zero margin (policy = reference): IPO (1 / (2 beta))^2 = 25 at beta = 0.1, SPPO-hard 50; a random model's
# NLL is about ln 624 = 6.4 per token; divergences between two random tiny models are of that order. NaN,
# inf or a blow-up fail.
LOSS_BOUND = 100.0


def assert_sane_losses(metrics: dict, run_dir: str | Path) -> None:
    """Every ``train/loss*`` of ``metrics`` finite and below ``LOSS_BOUND`` in size, and ``metrics.json`` in
    ``run_dir`` counts no step skipped for a non-finite loss."""
    losses = {k: v for k, v in metrics.items() if k.startswith("train/loss")}
    assert losses, sorted(metrics)
    for key, value in losses.items():
        assert math.isfinite(value) and abs(value) < LOSS_BOUND, (key, value)
    assert json.loads((Path(run_dir) / "metrics.json").read_text())["skipped_nonfinite_steps"] == 0


def compose_train(tmp_path: Path, overrides: list[str] | None = None, config_name: str = "train"):
    """Compose configs/train.yaml as `python train.py` would, with outputs under tmp_path."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from prefdistill.utils.run import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    # Every composed run gets its own folder (runs resume from their folder's last.ckpt);
    # the cache folder is shared by the runs of one test, as it is by the jobs of a sweep.
    runs = sorted((tmp_path / "runs").glob("*")) if (tmp_path / "runs").is_dir() else []
    out = tmp_path / "runs" / f"{len(runs):03d}"
    out.mkdir(parents=True)
    with open_dict(cfg):
        cfg.setdefault("paths", {})
        cfg.paths.output_dir = str(out)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def method_loss(name: str, tmp_path: Path | None = None):
    """The Loss that `method=<name>` builds (method files may compose others through defaults)."""
    import tempfile

    from hydra.utils import instantiate

    cfg = compose_train(Path(tmp_path or tempfile.mkdtemp()), [f"method={name}"])
    return instantiate(cfg.method)


def perturb_lora(model) -> None:
    """LoRA B starts at zero (adapter = identity); give it seeded weights so the adapter matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def offline_private_cache(monkeypatch, tmp_path):
    """One thread, no hub, and a cache folder of the test's own. A conftest makes it a fixture:
    ``_offline = pytest.fixture(autouse=True)(offline_private_cache)``."""
    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PREFDISTILL_CACHE", str(tmp_path / "pd_cache"))


# -- Lightning callbacks the subprocess tests inject with +callbacks.<name>._target_=train_helpers.<Class>


class KillAtStep(Callback):
    """SIGKILL this process right after optimizer step ``step`` (after ``signals``, if any)."""

    signals: tuple[int, ...] = ()

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            for sig in (*self.signals, signal.SIGKILL):
                os.kill(os.getpid(), sig)


class PreemptAtStep(KillAtStep):
    """Act like SLURM preempting the job: SIGUSR1 (Lightning saves an HPC checkpoint and
    requeues), then SIGKILL."""

    signals = (signal.SIGUSR1,)


class RecordBatches(Callback):
    """Append (global_step, dataset rows) of every train batch to ``path``."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        with open(self.path, "a") as f:
            f.write(json.dumps([trainer.global_step, batch["index"].tolist()]) + "\n")


class RecordRankBatches(Callback):
    """Append ``[rank, global_step, dataset rows]`` of every train batch to ``path``, and ``[rank, pid]`` to
    ``<path>.pids`` when training starts (every rank of a multi-rank run appends to the same files)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_start(self, trainer, module):
        with open(f"{self.path}.pids", "a") as f:
            f.write(json.dumps([trainer.global_rank, os.getpid()]) + "\n")

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        with open(self.path, "a") as f:
            f.write(json.dumps([trainer.global_rank, trainer.global_step, batch["index"].tolist()]) + "\n")


class NonFiniteLossOnRank(Callback):
    """Make rank ``rank``'s loss NaN at the batch starting at ``global_step == step`` (other ranks' stay finite)."""

    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_rank != self.rank or trainer.global_step != self.step:
            return
        compute = type(module).compute

        def nan_once(batch):
            del module.compute  # the class's method again from the next batch on
            loss, metrics = compute(module, batch)
            return loss * float("nan"), metrics

        module.compute = nan_once


def shipped_sft_datamodule(spec, n: int = 8, batch_size: int = 4):
    """The shipped demo data as ``n`` SFT rows (no held-out split), tokenised for ``spec`` and set up for fitting."""
    from prefdistill.data import PreferenceDataModule
    from prefdistill.models import load_tokenizer

    dm = PreferenceDataModule(
        source="shipped", record_type="sft", max_samples=n, batch_size=batch_size,
        max_length=96, max_prompt_length=64, val_fraction=0.0,
    )  # fmt: skip
    dm.connect(load_tokenizer(spec))
    dm.setup("fit")
    return dm

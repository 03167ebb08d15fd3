"""Helpers for tests that compose the real Hydra train config (imported by name: unique module)."""

from __future__ import annotations

from pathlib import Path

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


class KillAtStep:
    """Lightning callback for tests: SIGKILL this process right after optimizer step ``step``."""

    def __new__(cls, step: int):
        import os
        import signal

        from lightning.pytorch.callbacks import Callback

        class _Kill(Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == step:
                    os.kill(os.getpid(), signal.SIGKILL)

        return _Kill()


class RecordBatches:
    """Lightning callback for tests: append (global_step, dataset rows) of every train batch to ``path``."""

    def __new__(cls, path: str):
        import json

        from lightning.pytorch.callbacks import Callback

        class _Record(Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                with open(path, "a") as f:
                    f.write(json.dumps([trainer.global_step, batch["index"].tolist()]) + "\n")

        return _Record()


def method_loss(name: str, tmp_path: Path | None = None):
    """The Loss that `method=<name>` builds (method files may compose others through defaults)."""
    import tempfile

    from hydra.utils import instantiate

    cfg = compose_train(Path(tmp_path or tempfile.mkdtemp()), [f"method={name}"])
    return instantiate(cfg.method)


class PreemptAtStep:
    """Lightning callback for tests: act like SLURM preempting the job after step ``step``:
    SIGUSR1 (Lightning saves an HPC checkpoint and requeues), then SIGKILL."""

    def __new__(cls, step: int):
        import os
        import signal

        from lightning.pytorch.callbacks import Callback

        class _Preempt(Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == step:
                    os.kill(os.getpid(), signal.SIGUSR1)
                    os.kill(os.getpid(), signal.SIGKILL)

        return _Preempt()

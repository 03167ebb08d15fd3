"""Entry-point plumbing: config location, resolvers, the task wrapper and instantiation of lists.

With ``config_groups.py`` (the config groups built in Python) this is the only code below the entry points
that touches omegaconf/hydra objects.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("prefdistill")

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def config_dir() -> str:
    """``configs/`` of a source checkout, else the copy packaged inside the wheel."""
    for candidate in (_PACKAGE_DIR.parent / "configs", _PACKAGE_DIR / "configs"):
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no configs/train.yaml beside or inside {_PACKAGE_DIR}")


def _run_group() -> str:
    """One W&B group per multirun (the sweep folder), one per single run (its run folder)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        folder = hc.sweep.dir if hc.mode == RunMode.MULTIRUN else hc.run.dir
        return Path(folder).name
    except Exception:  # outside a Hydra app (tests composing configs)
        return time.strftime("%Y-%m-%d_%H-%M-%S")


def _wandb_id(run_dir: str) -> str:
    """The W&B run id of a run folder: created once, then reused so a resumed run continues it.

    Every rank of a multi-rank run resolves it, under torchrun or srun at the same moment: the file is
    linked into place only if absent (atomic, fails when another process won), and every rank returns
    what the file holds, so all agree on one id.
    """
    path = Path(run_dir) / "wandb_id"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".wandb_id.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.write_text(uuid.uuid4().hex[:12] + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def _saved_at(path: Path) -> int:
    """When a checkpoint was last written: a file's mtime, or a DeepSpeed folder's newest file's."""
    return max(p.stat().st_mtime_ns for p in [path, *(path.rglob("*") if path.is_dir() else [])])


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """``auto``: resume from the run folder's newest checkpoint, else start fresh (None).

    Candidates are ``checkpoints/last.ckpt`` (ModelCheckpoint) and ``hpc_ckpt_<n>.ckpt``, which
    Lightning writes when SLURM sends SIGUSR1 before preempting a job it then requeues. Under
    DeepSpeed each is a folder (the engine's checkpoint, with its ``latest`` tag file).
    """
    if ckpt_path != "auto":
        return ckpt_path
    out = Path(output_dir)
    candidates = [out / "checkpoints" / "last.ckpt", *out.glob("hpc_ckpt_*.ckpt")]
    found = [p for p in candidates if p.is_file() or (p / "latest").is_file()]
    if not found:
        return None
    newest = max(found, key=_saved_at)
    if newest.name.startswith("hpc_ckpt_"):
        # Under SLURM, Lightning's validate()/test() with ckpt_path=None silently load any
        # hpc_ckpt_* in the run folder; move them all out of its sight, resume from the newest.
        (out / "checkpoints").mkdir(exist_ok=True)
        for hpc in [p for p in found if p.name.startswith("hpc_ckpt_")]:
            moved = out / "checkpoints" / f"preempted-{hpc.stem}.ckpt"
            os.replace(hpc, moved)
            newest = moved if hpc == newest else newest
    log.info("resuming from %s", newest)
    return str(newest)


def register_resolvers() -> None:
    """The ``pd.*`` resolvers the config tree uses (``${pd.cache_dir:}``, ...). The one config group that is
    not a folder of files, ``teacher``, is registered by :func:`prefdistill.utils.config_groups.register_config_groups`."""
    if not OmegaConf.has_resolver("pd.run_group"):
        OmegaConf.register_new_resolver("pd.run_group", _run_group, use_cache=True)
    if not OmegaConf.has_resolver("pd.wandb_id"):
        OmegaConf.register_new_resolver("pd.wandb_id", _wandb_id, use_cache=True)
    if not OmegaConf.has_resolver("pd.cache_dir"):
        OmegaConf.register_new_resolver(
            "pd.cache_dir",
            lambda: os.environ.get("PREFDISTILL_CACHE", str(Path.home() / ".cache" / "prefdistill")),
        )


def instantiate_dict(nodes: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a name -> node mapping (callbacks, loggers)."""
    from hydra.utils import instantiate

    if not nodes:
        return []
    return [instantiate(node) for node in nodes.values() if node is not None and "_target_" in node]


def task_wrapper(task: Callable[[DictConfig], dict]) -> Callable[[DictConfig], dict]:
    """Log failures and always close W&B, so one crashed job does not break a multirun."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> dict:
        try:
            return task(cfg)
        except Exception:
            log.exception("task failed")
            raise
        finally:
            try:
                import wandb

                if wandb.run is not None:
                    log.info("closing W&B run %s", wandb.run.dir)
                    wandb.finish()
            except ImportError:
                pass

    return wrapped


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The value a sweeper optimises; a clear error if the configured metric was not logged."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric {name!r} was not logged; logged: {sorted(metrics)}")
    return float(metrics[name])

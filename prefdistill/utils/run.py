"""Entry-point plumbing: config location, resolvers, the task wrapper, run folders and instantiation of lists.

With ``config_groups.py`` (the config groups built in Python) and ``sweep.py`` (a multirun's job names and
summary, a Hydra callback) this is the only code below the entry points that touches omegaconf/hydra objects.
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

from prefdistill.utils.errors import UsageError

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


def newest_checkpoint(output_dir: str | Path) -> Path | None:
    """The run folder's newest checkpoint, None when it has none. Candidates are ``checkpoints/last.ckpt``
    (ModelCheckpoint) and ``hpc_ckpt_<n>.ckpt``, which Lightning writes when SLURM sends SIGUSR1 before
    preempting a job it then requeues. Under DeepSpeed each is a folder (the engine's checkpoint, with its
    ``latest`` tag file)."""
    out = Path(output_dir)
    candidates = [out / "checkpoints" / "last.ckpt", *out.glob("hpc_ckpt_*.ckpt")]
    found = [p for p in candidates if p.is_file() or (p / "latest").is_file()]
    return max(found, key=_saved_at) if found else None


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """``auto``: resume from the run folder's newest checkpoint (:func:`newest_checkpoint`), else start fresh
    (None); any other value is returned as it is."""
    if ckpt_path != "auto":
        return ckpt_path
    out = Path(output_dir)
    newest = newest_checkpoint(out)
    if newest is None:
        return None
    if newest.name.startswith("hpc_ckpt_"):
        # Under SLURM, Lightning's validate()/test() with ckpt_path=None silently load any
        # hpc_ckpt_* in the run folder; move them all out of its sight, resume from the newest.
        (out / "checkpoints").mkdir(exist_ok=True)
        for hpc in [p for p in out.glob("hpc_ckpt_*.ckpt") if p.is_file() or (p / "latest").is_file()]:
            moved = out / "checkpoints" / f"preempted-{hpc.stem}.ckpt"
            os.replace(hpc, moved)
            newest = moved if hpc == newest else newest
    return str(newest)


def register_resolvers() -> None:
    """The ``pd.*`` resolvers the config tree uses (``${pd.cache_dir:}``, ...; ``pd.job_dir`` and ``pd.run_label``
    name a sweep's job folders and W&B runs: ``utils/sweep.py``). The one config group that is not a folder of
    files, ``teacher``, is registered by :func:`prefdistill.utils.config_groups.register_config_groups`."""
    if not OmegaConf.has_resolver("pd.run_group"):
        OmegaConf.register_new_resolver("pd.run_group", _run_group, use_cache=True)
    if not OmegaConf.has_resolver("pd.wandb_id"):
        OmegaConf.register_new_resolver("pd.wandb_id", _wandb_id, use_cache=True)
    from prefdistill.utils.sweep import job_dir, run_label

    for name, resolver in (("pd.job_dir", job_dir), ("pd.run_label", run_label)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
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


# What a run folder holds once the run made something worth keeping (resumable, or results).
_RUN_RESULTS = ("checkpoints", "model", "metrics.json", "run_fingerprint.json")


def _launch_rank() -> int:
    """This process's rank as its launcher set it (Lightning's, torchrun, srun); 0 for a single process."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def holds_results(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds anything of a run worth keeping: a checkpoint, a model, metrics, or the
    fingerprint of a run that started training (``utils/resume.py``); hpc_ckpt_* and eval_* folders too."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    names = {p.name for p in run_dir.iterdir()}
    return bool(names & set(_RUN_RESULTS)) or any(n.startswith(("hpc_ckpt_", "eval_")) for n in names)


def discard_run_folder(run_dir: str | Path, why: str) -> bool:
    """Remove ``run_dir`` when it holds nothing worth keeping (:func:`holds_results`): a run that stopped
    before making anything (a refused configuration, bad data, ``preflight_only``) leaves no folder of
    Hydra's config and an empty log behind. Only the launching process (rank 0) removes it. Returns
    whether it was removed."""
    run_dir = Path(run_dir)
    if _launch_rank() != 0 or not run_dir.is_dir() or holds_results(run_dir):
        return False
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    log.info("%s: removed the run folder %s (nothing of this run to keep)", why, run_dir)
    return True


def _finish_wandb() -> None:
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        log.info("closing W&B run %s", wandb.run.dir)
        wandb.finish()


def task_wrapper(task: Callable[[DictConfig], dict]) -> Callable[[DictConfig], dict]:
    """Log failures and always close W&B, so one crashed job does not break a multirun.

    A :class:`~prefdistill.utils.errors.UsageError` is logged as its message alone: it is not a crash, and its
    message says what to fix (:func:`exit_on_usage_error` then ends the app without a second copy).
    A run folder made for this run (nothing in it yet) is removed again when the run fails before making
    anything (:func:`discard_run_folder`)."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> dict:
        run_dir = cfg.get("paths", {}).get("output_dir")
        new_folder = run_dir is not None and not holds_results(run_dir)
        finished = False
        try:
            result = task(cfg)
            finished = True
            return result
        except UsageError as err:
            log.error("%s", err)
            raise
        except Exception:
            log.exception("task failed")
            raise
        finally:
            _finish_wandb()
            if not finished and new_folder:  # W&B closed first: it writes into the folder
                discard_run_folder(run_dir, "stopped")

    return wrapped


def exit_on_usage_error(main: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap an app's Hydra main: a :class:`~prefdistill.utils.errors.UsageError` (its message already logged by
    :func:`task_wrapper`) ends the process with status 1 and nothing more; Hydra would print it again with
    a traceback. A sweep ends there too, as it does when preflight refuses a job."""

    @functools.wraps(main)
    def wrapped(cfg: DictConfig) -> Any:
        try:
            return main(cfg)
        except UsageError:
            raise SystemExit(1) from None

    return wrapped


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The value a sweeper optimises; a clear error if the configured metric was not logged."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric {name!r} was not logged; logged: {sorted(metrics)}")
    return float(metrics[name])

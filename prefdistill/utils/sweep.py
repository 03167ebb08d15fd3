"""Multiruns: job folders named by their swept values, and the summary table every sweep ends with.

``configs/hydra/default.yaml`` names each job's folder ``${pd.job_dir:}``: ``<job number>_<key=value,...>``
of the keys the sweep varies (``0_method.beta=0.05``), so folders and W&B runs (``logger.wandb.name``:
the folder's name) say what they hold. The swept keys are the sweep overrides of the command line (read
from the ``multirun.yaml`` Hydra saves in the sweep folder before the jobs start) and the keys of
``hydra.sweeper.params`` (experiment files, Optuna searches). Characters other than letters, digits and
``._=,+-`` become ``_`` and a long name is cut; the job number keeps every name unique.

:class:`prefdistill.analysis.summary.SweepSummary` (a Hydra callback, also in ``configs/hydra/default.yaml``)
writes ``<sweep>/summary.md`` after each job and prints it when the sweep ends.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("prefdistill")

MAX_LABEL = 80  # characters of key=value in a job folder's name


def _parsed(overrides: list[str]) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(overrides=list(overrides))


def swept_keys(hydra_cfg: DictConfig) -> set[str]:
    """The config keys a multirun varies: its command line's sweep overrides and ``hydra.sweeper.params``."""
    keys = set((OmegaConf.select(hydra_cfg, "sweeper.params") or {}).keys())
    saved = Path(str(hydra_cfg.sweep.dir)) / "multirun.yaml"
    if saved.is_file():
        task = OmegaConf.to_container(OmegaConf.load(saved).hydra.overrides.task, resolve=False)
        keys |= {o.key_or_group for o in _parsed(task) if o.is_sweep_override()}
    return keys


def job_label(overrides: list[str], swept: set[str]) -> str:
    """``key=value,...`` of the job's ``overrides`` whose key is ``swept``, safe as a folder name."""
    items = [o.lstrip("+~") for o in map(str, overrides) if o.lstrip("+~").split("=", 1)[0] in swept]
    label = re.sub(r"[^A-Za-z0-9._=,+-]", "_", ",".join(items))
    return label[:MAX_LABEL]


def job_dir() -> str:
    """The resolver ``pd.job_dir``: this job's folder name in the sweep, ``<num>`` or ``<num>_<label>``."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    label = job_label(OmegaConf.to_container(hc.overrides.task, resolve=False), swept_keys(hc))
    return f"{hc.job.num}_{label}" if label else str(hc.job.num)


def run_label() -> str | None:
    """The resolver ``pd.run_label``: the run folder's name (a job's ``<num>_<swept values>``, or the run
    name), for W&B run names; None outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir).name
    except Exception:  # composed without Hydra's runtime (a test composing configs)
        return None

"""Whether this launch may continue a run folder, and what it says about where it starts.

A named run (``run_name=x``) is resumed by running the same command again: the run folder's newest
checkpoint is continued (``ckpt_path: auto``, ``utils.run.resolve_ckpt_path``). Running a *different*
configuration under the same name would continue a model trained with the old settings and label its
results with the new ones, so a run folder records what determines its result --
:func:`fingerprint`: model, data, method and its hyper-parameters, module (optimizer, schedule), seed,
batch, steps and precision; not logging, paths, evaluation or the run's name -- in
``run_fingerprint.json``, written when training starts (so a run killed before its first checkpoint
carries it too). A launch whose fingerprint differs is refused (:class:`RunConfigChanged`) with the keys
that differ and the two ways out: another ``run_name``, or ``resume=force``, which continues anyway and
is recorded (the file's ``forced`` list, copied into ``metrics.json``).

    start = check_start(run_dir, fingerprint(config), run_name="x", ckpt_path=ckpt, force=False)
    log.info(start.describe())        # "resuming run x from step 4 of 12 (.../last.ckpt)"
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefdistill.utils.errors import UsageError

log = logging.getLogger("prefdistill")

FINGERPRINT_FILE = "run_fingerprint.json"
# Config entries that do not change what training computes: bookkeeping, logging, where files go,
# evaluation after training, how the work is laid out on the hardware. Prefixes of dotted keys.
NOT_RESULT = (
    "task_name", "tags", "optimized_metric", "validate_before_fit", "validate_after_fit", "eval_label",
    "save_model", "save_merged", "run_name", "ckpt_path", "resume", "reuse_finished", "preflight_only", "eval", "logger",
    "callbacks", "paths", "hydra", "hardware",
    "trainer.default_root_dir", "trainer.log_every_n_steps", "trainer.enable_model_summary",
    "trainer.enable_progress_bar", "trainer.enable_checkpointing", "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch", "trainer.num_sanity_val_steps", "trainer.limit_val_batches",
    "trainer.limit_test_batches", "trainer.plugins", "trainer.accelerator", "trainer.strategy",
    "trainer.profiler", "data.num_workers", "data.eval_batch_size", "module.cache_dir", "model.cache_dir",
    "teacher.cache_dir",
)  # fmt: skip
# Cache folders: where they are does not matter, whether there is one does (a teacher cache is top-k).
CACHE_SWITCHES = ("module.reference_cache", "module.teacher_cache")


class _Absent:
    """A key one of two configurations does not have (shown and recorded as ``(not set)``)."""

    def __repr__(self) -> str:
        return "(not set)"

    __str__ = __repr__


_ABSENT = _Absent()


class RunConfigChanged(UsageError):
    """This launch's configuration is not the one the run folder was trained with."""


def _excluded(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in NOT_RESULT)


def fingerprint(config: dict) -> dict[str, Any]:
    """What determines a run's result, as ``{dotted key: value}``, from its resolved config (plain dicts)."""
    from prefdistill.utils.nested import flatten

    flat = {k: v for k, v in flatten(config).items() if not _excluded(k)}
    for key in CACHE_SWITCHES:
        if key in flat:
            flat[key] = "on" if flat[key] is not None else None
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(flat.items())}


def differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (old value, new value)}`` for every key whose value differs (absent: ``(not set)``)."""
    keys = sorted(set(old) | set(new))
    return {
        k: (old.get(k, _ABSENT), new.get(k, _ABSENT))
        for k in keys
        if old.get(k, _ABSENT) != new.get(k, _ABSENT)
    }


def recorded(run_dir: str | Path) -> dict | None:
    """The run folder's ``run_fingerprint.json`` (``{"fingerprint", "forced"}``), None when it has none."""
    path = Path(run_dir) / FINGERPRINT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _previous(run_dir: Path, checkpoint: str | None) -> dict | None:
    """What the run folder, else the checkpoint's own run folder, was trained with (None: a new run, or one
    from before these files)."""
    folders = [run_dir]
    if checkpoint is not None:
        parent = Path(checkpoint).resolve().parent
        folders.append(parent.parent if parent.name == "checkpoints" else parent)
    for folder in folders:
        found = recorded(folder)
        if found is not None:
            return found
    return None


def checkpoint_step(checkpoint: str | Path) -> int | None:
    """The optimizer step a Lightning checkpoint was saved at (a ``.ckpt`` file, read lazily, or a DeepSpeed
    folder's client state); None when it cannot be read."""
    import torch

    path = Path(checkpoint)
    try:
        if path.is_dir():  # DeepSpeed: <folder>/<tag>/mp_rank_00_model_states.pt holds Lightning's state
            tag = (path / "latest").read_text().strip()
            path = path / tag / "mp_rank_00_model_states.pt"
            return int(torch.load(path, map_location="cpu", mmap=True, weights_only=False)["global_step"])
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=True)["global_step"])
    except Exception as err:  # an older or foreign layout: the resume still works, only the step is unknown
        log.info("could not read the step of %s (%s)", checkpoint, err)
        return None


@dataclass
class Start:
    """Where this launch starts: ``step`` (0, or the checkpoint's), the checkpoint, and the forced resumes."""

    run_name: str
    checkpoint: str | None
    step: int
    total: str  # "12" steps, or "1 epoch(s)"
    forced: list[dict] = field(default_factory=list)

    def describe(self) -> str:
        if self.checkpoint is None:
            return f"no checkpoint for run {self.run_name}: starting from step 0 of {self.total}"
        at = f"step {self.step}" if self.step >= 0 else "its checkpoint"
        return f"resuming run {self.run_name} from {at} of {self.total} ({self.checkpoint})"


def _refusal(
    run_name: str, run_dir: Path, changed: dict[str, tuple[Any, Any]], checkpoint: str | None
) -> str:
    shown = list(changed.items())[:20]
    lines = [f"  {k}: {old!r} -> {new!r}" for k, (old, new) in shown]
    if len(changed) > len(shown):
        lines.append(f"  ... and {len(changed) - len(shown)} more")
    what = "a checkpoint of a run" if checkpoint else "a run"
    return (
        f"run {run_name!r} ({run_dir}) holds {what} started with another configuration; continuing it would "
        "label a model trained with the old settings with the new ones. What differs (old -> new):\n"
        + "\n".join(lines)
        + f"\nEither start a new run (run_name={run_name}-2, or leave run_name unset), or continue this one "
        "with the new settings anyway: resume=force (recorded in metrics.json)."
    )


def check_start(
    run_dir: str | Path,
    new: dict[str, Any],
    *,
    run_name: str,
    ckpt_path: str | None,
    force: bool,
    total: str,
) -> Start:
    """Refuse (:class:`RunConfigChanged`) a launch whose fingerprint ``new`` differs from the one the run folder
    (or the checkpoint's run folder) was trained with, unless ``force``; otherwise say where it starts.

    ``ckpt_path`` is the checkpoint this launch resumes from (None: it starts from step 0). Reads only: the
    fingerprint is written by :func:`record_start` once training starts.
    """
    run_dir = Path(run_dir)
    previous = _previous(run_dir, ckpt_path)
    forced = list((previous or {}).get("forced", []))
    step = 0 if ckpt_path is None else checkpoint_step(ckpt_path)
    if previous is not None:
        changed = differences(previous["fingerprint"], new)
        if changed and not force:
            raise RunConfigChanged(_refusal(run_name, run_dir, changed, ckpt_path))
        if changed:
            log.warning("resume=force: continuing run %s with %d changed settings: %s", run_name, len(changed),
                        ", ".join(changed))  # fmt: skip
            record = {k: [v if v is not _ABSENT else str(v) for v in pair] for k, pair in changed.items()}
            forced.append({"step": step, "changed": record})
    return Start(run_name, ckpt_path, -1 if step is None else step, total, forced)


def record_start(run_dir: str | Path, new: dict[str, Any], start: Start) -> Path:
    """Write ``run_fingerprint.json``: the fingerprint and the forced resumes."""
    from prefdistill.utils.atomic import atomic_write_json

    return atomic_write_json(Path(run_dir) / FINGERPRINT_FILE, {"fingerprint": new, "forced": start.forced})


def recording_callback(run_dir: str | Path, new: dict[str, Any], start: Start):
    """A Lightning callback that calls :func:`record_start` on rank 0 when fit starts (after the data is set up
    and the checkpoint loaded): from then on the run folder belongs to this configuration. A launch that
    fails before (bad data, a missing model) leaves the folder to the next one."""
    from lightning.pytorch.callbacks import Callback

    class RecordStart(Callback):
        def on_fit_start(self, trainer, module) -> None:
            if trainer.is_global_zero:
                record_start(run_dir, new, start)

    return RecordStart()


# What else a finished run's metrics depend on: the evaluation after training and the held-out passes.
METRIC_SETTINGS = ("eval", "validate_before_fit", "validate_after_fit", "trainer.limit_val_batches")


def finished(run_dir: str | Path, config: dict) -> dict | None:
    """The ``metrics.json`` of a run folder that already finished with this configuration, else None.

    Finished with this configuration: ``metrics.json`` exists, the recorded fingerprint equals this launch's
    (:func:`fingerprint`) and so do the settings its metrics also depend on (:data:`METRIC_SETTINGS`, read
    from the folder's ``config_resolved.yaml``). A re-launched sweep then reuses every job that finished --
    what makes a hyper-parameter search resumable job by job -- instead of re-evaluating it."""
    from omegaconf import OmegaConf

    from prefdistill.utils.nested import flatten

    run_dir = Path(run_dir)
    previous, metrics_file, resolved = (
        recorded(run_dir),
        run_dir / "metrics.json",
        run_dir / "config_resolved.yaml",
    )
    if previous is None or not metrics_file.is_file() or not resolved.is_file():
        return None
    if differences(previous["fingerprint"], fingerprint(config)):
        return None
    old = flatten(OmegaConf.to_container(OmegaConf.load(resolved), resolve=False))
    new = flatten(config)
    def settings(flat: dict) -> dict:
        return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in METRIC_SETTINGS)}

    if settings(old) != settings(new):
        return None
    return json.loads(metrics_file.read_text())

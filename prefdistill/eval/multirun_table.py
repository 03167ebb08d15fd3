"""A Hydra callback that ends a multirun with its comparison table (PLaD Table 1 style).

At the end of ``python train.py -m ...`` (each job having run an ``eval`` suite on its model), it

* evaluates the reference rows with the same suite, unless ``reference_rows=false``: the **Teacher**
  (the spec the jobs trained against, after any pipeline stage fine-tuned it: ``<run>/teacher_spec.json``),
  the **Initial student** (the spec the rows start from: ``<run>/policy_spec.json``, e.g. the SFT'd
  student, as PLaD initialises its student by SFT) and, when that differs from the configured model,
  the **Base student** (the configured model, untrained);
* prints the table of every ``eval_results.json`` under the sweep folder and writes it to
  ``<sweep>/compare.md`` / ``compare.json`` (``prefdistill.eval.report.compare``).

With several seeds (``-m experiment=<study> seed=1,2,3``) the reference rows are evaluated once per seed
(``reference_rows/seed_<s>/``: each seed's SFT stages made its own teacher and initial student) and the
table shows ``mean ± std`` per row over the seeds, the per-seed table beside it (``compare_per_seed.md``).

Configured in an experiment file::

    hydra:
      callbacks:
        compare_table:
          _target_: prefdistill.eval.multirun_table.CompareTable
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("prefdistill.eval")


def _recorded(job_dirs: list[Path], role: str):
    """The ``role`` spec the first of ``job_dirs`` recorded (train.py writes it after the pipeline), LoRA off."""
    from prefdistill.models import run_spec
    from prefdistill.models.spec import RUN_SPEC_FILES

    for job in job_dirs:
        if (job / RUN_SPEC_FILES[role]).is_file():
            return dataclasses.replace(run_spec(job, role), lora=None)
    return None


def _seed(job: Path):
    """The seed a job ran with (its ``config_resolved.yaml``), None when it recorded none."""
    from omegaconf import OmegaConf

    resolved = job / "config_resolved.yaml"
    return OmegaConf.load(resolved).get("seed") if resolved.is_file() else None


def job_order(path: Path) -> list:
    """Sort key of a job's path in the sweep: numbers in folder names compare as numbers (``s1_2`` before
    ``s1_10``, ``2`` before ``10``), so the table lists rows in job order whatever ``hydra.sweep.subdir`` is."""
    return [[(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", part) if t] for part in path.parts]


class CompareTable(Callback):
    """``reference_rows``: evaluate the Teacher / Base student / Initial student rows; ``paired_against``: row
    labels every row is compared with, paired over prompts and seeds (``prefdistill/eval/paired.py``)."""

    def __init__(self, reference_rows: bool = True, paired_against: list[str] | None = None):
        self.reference_rows = reference_rows
        self.paired_against = list(paired_against or [])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.utils import instantiate

        from prefdistill.eval import report
        from prefdistill.eval.runner import evaluate_model

        sweep = Path(config.hydra.sweep.dir)
        if not config.get("eval"):
            log.warning("compare table: no eval suite configured (eval=<suite>), nothing to compare")
            return
        jobs = sorted(
            (f for f in sweep.rglob(report.RESULTS_FILE) if "reference_rows" not in f.parts),
            key=lambda f: job_order(f.relative_to(sweep)),
        )
        if not jobs:
            log.warning("compare table: no job of %s wrote %s", sweep, report.RESULTS_FILE)
            return
        job_dirs = [f.parent.parent for f in jobs]  # <job>/eval_<suite>/eval_results.json
        by_seed: dict = {}
        for job in job_dirs:
            by_seed.setdefault(_seed(job), []).append(job)
        files = []
        if self.reference_rows:  # per seed: the seed's SFT stages made its teacher and initial student
            suite = instantiate(config.eval, _convert_="all")
            base = dataclasses.replace(instantiate(config.model), lora=None)
            for seed, dirs in by_seed.items():
                teacher, initial = (_recorded(dirs, role) for role in ("teacher", "policy"))
                rows = [("Teacher", teacher, None)] if teacher is not None else []
                if initial is not None and initial.name_or_path != base.name_or_path:
                    rows.append(("Base student", base, teacher))  # before the SFT stage the rows start from
                rows.append(("Initial student", initial or base, teacher))
                folder = sweep / "reference_rows" / (f"seed_{seed}" if len(by_seed) > 1 else "")
                for label, spec, comparator in rows:
                    out = folder / label.lower().replace(" ", "_")
                    if not (out / report.RESULTS_FILE).is_file():  # a re-run of the callback reuses them
                        evaluate_model(suite, spec, teacher=comparator, out_dir=out, label=label, wandb=None)
                    files.append(out / report.RESULTS_FILE)
        table, _ = report.compare(files + jobs, out_dir=sweep, paired_against=self.paired_against)
        print(table, flush=True)
        log.info("comparison: %s", sweep / "compare.md")

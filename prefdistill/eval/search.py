"""Hyper-parameter searches over table rows: read a search multirun, choose, and write the tuned row.

A search is a grid multirun of one row on the validation split (``configs/experiment/distill_search.yaml``,
``configs/hparams_search/distill_<row>.yaml``), every job returning an objective in its ``metrics.json``
(``optimized_metric``: the guarded validation exact match, :mod:`prefdistill.eval.degeneracy`). This module
turns the finished jobs into

* a table, one line per job: the swept values, the objective, exact match, the degeneracy numbers, the
  guard's verdict and the job's wall time (``search.md`` in the sweep folder);
* the choice: the job with the highest objective, ties going to the earlier job in the sweep's order (the
  grid lists each row's own default first, so a tie keeps the paper's value); ``chosen.yaml``;
* the tuned row: ``configs/row/<row>_tuned.yaml``, the row file with the chosen values on top, which the final
  table sweeps (``sweeps/distill_study.sh``: ``experiment=distill_study row=<row>_tuned,...``).

    python -m prefdistill.eval.search logs/distill_search/plad            # print the table and the choice
    python -m prefdistill.eval.search logs/distill_search/* --write-rows configs/row   # + the tuned rows

Job folders are read, not trusted blindly: a job without ``metrics.json`` (killed, or still running) is
listed as missing and never chosen, and a sweep whose jobs ran different rows is an error.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback

from prefdistill.utils.atomic import atomic_write_json, atomic_write_text
from prefdistill.utils.markdown import markdown_table

DEGENERACY_KEYS = ("degeneracy/answer_rate", "degeneracy/repeat2", "degeneracy/length_ratio")


@dataclass
class Job:
    folder: Path
    overrides: dict[str, str]  # key -> value as given on the command line (Hydra's overrides.yaml)
    metrics: dict | None  # metrics.json, None when the job did not finish
    choices: dict | None = None  # the config group choices the job ran with (row=..., Hydra's hydra.yaml)

    def value(self, key: str) -> float | None:
        if self.metrics is None:
            return None
        after = self.metrics.get("after", {})
        v = after.get(key, after.get(f"eval/{key}"))
        return None if v is None else float(v)


def _overrides(folder: Path) -> dict[str, str]:
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no .hydra/overrides.yaml: not a Hydra job folder")
    out = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _choices(folder: Path) -> dict | None:
    path = folder / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return None
    return ((yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("runtime", {}) or {}).get("choices")


def read_jobs(sweep: Path) -> list[Job]:
    """Every job folder of a multirun (a folder holding ``.hydra/overrides.yaml``), in the sweep's order."""
    from prefdistill.eval.multirun_table import job_order

    folders = sorted(
        (p.parent.parent for p in sweep.rglob(".hydra/overrides.yaml")), key=lambda f: job_order(f)
    )
    folders = [f for f in folders if f != sweep and "reference_rows" not in f.relative_to(sweep).parts]
    if not folders:
        raise FileNotFoundError(f"search: no job folder (with .hydra/overrides.yaml) under {sweep}")
    jobs = []
    for f in folders:
        metrics = json.loads((f / "metrics.json").read_text()) if (f / "metrics.json").is_file() else None
        jobs.append(Job(f, _overrides(f), metrics, _choices(f)))
    return jobs


def swept_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose values differ between jobs, in the order they were given."""
    keys = dict.fromkeys(k for j in jobs for k in j.overrides)
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def row_of(jobs: list[Job]) -> str | None:
    """The row the jobs ran (``row=`` on the command line, else the group choice a search file made)."""
    rows = {j.overrides.get("row") or (j.choices or {}).get("row") for j in jobs}
    if len(rows) > 1:
        raise ValueError(
            f"search: the jobs ran different rows {sorted(map(str, rows))}; search one row per sweep"
        )
    return rows.pop()


def choose(jobs: list[Job], metric: str) -> Job:
    """The finished job with the highest ``metric`` (ties: the earliest in the sweep's order)."""
    scored = [(j.value(metric), i, j) for i, j in enumerate(jobs) if j.value(metric) is not None]
    scored = [s for s in scored if not math.isnan(s[0])]
    if not scored:
        raise ValueError(f"search: no finished job logged {metric!r} ({len(jobs)} jobs)")
    return max(scored, key=lambda s: (s[0], -s[1]))[2]


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def search_table(jobs: list[Job], metric: str) -> str:
    """Markdown: one line per job (swept values, objective, EM, degeneracy, guard, wall time), the chosen one
    marked, then the total cost."""
    keys, best = swept_keys(jobs), choose(jobs, metric)
    header = [*keys, metric, "EM", "Answered", "Rep-2", "Len/ref", "Guard", "Wall (s)", ""]
    body = []
    for j in jobs:
        if j.metrics is None:
            body.append([j.overrides.get(k, "") for k in keys] + ["missing"] + [""] * 7)
            continue
        fails = [k for k in DEGENERACY_KEYS if j.value(k) is None]
        guard = "?" if fails else ("fail" if j.value(metric) is not None and j.value(metric) < -100 else "ok")
        body.append([*(j.overrides.get(k, "") for k in keys), _fmt(j.value(metric)),
                     _fmt(j.value("exact_match/overall")), *(_fmt(j.value(k)) for k in DEGENERACY_KEYS),
                     guard, _fmt(j.metrics.get("wall_time_s")), "chosen" if j is best else ""])  # fmt: skip
    wall = sum(j.metrics.get("wall_time_s", 0.0) for j in jobs if j.metrics)
    done = sum(j.metrics is not None for j in jobs)
    notes = [f"{done} of {len(jobs)} jobs finished; wall time of the finished jobs {wall:.0f} s "
             "(stages they share are counted in the first job that ran them)"]  # fmt: skip
    return markdown_table(header, body, notes=notes)


def tuned_row_text(row: str, chosen: Job, keys: list[str], metric: str) -> str:
    """``configs/row/<row>_tuned.yaml``: the row with the chosen values of ``keys``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parse = OverridesParser.create().parse_override  # the value as Hydra typed it on the command line
    tree: dict = {}
    for key in keys:
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = parse(f"{key}={chosen.overrides[key]}").value()
    header = (
        "# @package _global_\n"
        f"# {row} at the values its validation search chose (python -m prefdistill.eval.search; docs/study.md):\n"
        f"# {metric} = {_fmt(chosen.value(metric))}, job {chosen.folder.name}. Regenerated by the search; do not edit.\n"
        f"defaults:\n  - {row}\n\n"
    )
    return header + yaml.safe_dump(tree, sort_keys=False, default_flow_style=False)


def summarize(sweep: Path, metric: str, write_rows: Path | None = None) -> str:
    """Table + choice of one search sweep; writes ``search.md``/``chosen.yaml`` into it (and the tuned row)."""
    jobs = read_jobs(sweep)
    best, keys, row = choose(jobs, metric), swept_keys(jobs), row_of(jobs)
    table = f"Search {sweep.name} (row {row}), objective {metric}:\n\n" + search_table(jobs, metric)
    atomic_write_text(sweep / "search.md", table + "\n")
    chosen = {"row": row, "metric": metric, "value": best.value(metric), "job": str(best.folder),
              "overrides": {k: best.overrides[k] for k in keys}}  # fmt: skip
    atomic_write_json(sweep / "chosen.json", chosen)
    if write_rows is not None:
        if row is None:
            raise ValueError(f"search {sweep}: its jobs name no row (row=<name>); no tuned row to write")
        atomic_write_text(write_rows / f"{row}_tuned.yaml", tuned_row_text(row, best, keys, metric))
    return table


def collapse_table(jobs: list[Job]) -> str:
    """Markdown: per job, the swept values, the student's per-token log-likelihood of the held-out pairs' chosen
    (teacher) and rejected (student) responses before -> after training and their gap, then the validation exact
    match and degeneracy numbers: a collapse shows as both likelihoods falling while the gap grows."""

    def pair(j: Job, key: str) -> tuple[float | None, float | None]:
        m = j.metrics or {}
        return m.get("before", {}).get(key), m.get("after", {}).get(key)

    def arrow(before, after) -> str:
        return f"{_fmt(before)} → {_fmt(after)}"

    keys = swept_keys(jobs)
    header = [*keys, "chosen/token", "rejected/token", "gap", "EM", "Answered", "Rep-2", "Len/ref"]
    body = []
    for j in jobs:
        (cb, ca), (rb, ra) = pair(j, "val/logps/chosen_per_token"), pair(j, "val/logps/rejected_per_token")
        gap = [None if c is None or r is None else c - r for c, r in ((cb, rb), (ca, ra))]
        body.append([*(j.overrides.get(k, "") for k in keys), arrow(cb, ca), arrow(rb, ra), arrow(*gap),
                     _fmt(j.value("exact_match/overall")), *(_fmt(j.value(k)) for k in DEGENERACY_KEYS)])  # fmt: skip
    notes = ["chosen = the teacher's sample, rejected = the initial student's, on the held-out 10 % of the prepared "
             "pairs; per-token log-likelihood under the trained student, before -> after; EM and the degeneracy "
             "numbers on the validation prompts (prefdistill/eval/degeneracy.py)"]  # fmt: skip
    return markdown_table(header, body, notes=notes)


class CollapseSummary(Callback):
    """A Hydra callback: ``collapse.md`` (:func:`collapse_table`) in the sweep folder at the end of a multirun."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        table = f"Collapse ablation {sweep.name}:\n\n" + collapse_table(read_jobs(sweep))
        atomic_write_text(sweep / "collapse.md", table + "\n")
        print(table, flush=True)


class SearchSummary(Callback):
    """A Hydra callback: at the end of a search multirun, ``search.md`` and ``chosen.json`` in its folder (the
    objective is the run's ``optimized_metric``), printed."""

    def on_multirun_end(self, config, **kwargs) -> None:
        metric = config.get("optimized_metric")
        if not metric:
            raise ValueError("search summary: set optimized_metric (the objective the search maximises)")
        print(summarize(Path(config.hydra.sweep.dir), metric), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="search multirun folders (one row each)")
    parser.add_argument(
        "--metric", default="eval/guarded/exact_match", help="the objective (metrics.json 'after')"
    )
    parser.add_argument(
        "--write-rows", type=Path, default=None, help="folder for <row>_tuned.yaml (configs/row)"
    )
    args = parser.parse_args(argv)
    for sweep in args.sweeps:
        print(summarize(sweep, args.metric, args.write_rows), end="\n\n", flush=True)


if __name__ == "__main__":
    main()

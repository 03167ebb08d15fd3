"""Paired comparisons of table rows on exact match: does row A beat row B, or can we not tell?

Two rows of a table answered the same prompts under the same seeds, so their difference is best read
pair by pair: for every (seed, prompt) both graded, ``d = correct_A − correct_B`` ∈ {−1, 0, 1}. Reported:

* ``delta``: the mean of ``d`` in points (% of the prompts), the same as the difference of the two rows' EM
  averaged over the seeds both ran;
* ``ci``: a 95 % percentile bootstrap interval of ``delta`` that resamples *prompts* with replacement and
  keeps every seed of a drawn prompt (a cluster bootstrap: a prompt's seeds are not independent draws);
* ``wins`` / ``losses``: pairs A got right and B wrong, and the reverse; ``p``: the exact two-sided sign
  test on them (ties dropped; seeds count as separate pairs, so it is optimistic where seeds agree);
* ``verdict``: ``better`` when the interval lies above 0, ``worse`` when below, ``can't tell`` otherwise.

Per-prompt correctness comes from the ``exact_match`` field of each run's ``generations.jsonl`` (written
beside ``eval_results.json`` by :func:`prefdistill.eval.report.write_results`); a run's seed from its job's
``config_resolved.yaml`` or, for the reference rows a multirun evaluates, the ``seed_<s>`` folder above it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prefdistill.utils.markdown import markdown_table

GENERATIONS_FILE = "generations.jsonl"


def seed_of(results_file: Path) -> int | None:
    """The seed a result was produced under: its job's resolved config, else a ``seed_<s>`` folder above it."""
    resolved = results_file.parent.parent / "config_resolved.yaml"
    if resolved.is_file():
        from omegaconf import OmegaConf

        seed = OmegaConf.load(resolved).get("seed")
        return None if seed is None else int(seed)
    for part in reversed(results_file.parts):
        if m := re.fullmatch(r"seed_(-?\d+)", part):
            return int(m.group(1))
    return None


def correctness(results_file: Path) -> dict[str, bool]:
    """``{prompt id: correct}`` over the graded prompts of the run whose results are ``results_file``."""
    path = Path(results_file).parent / GENERATIONS_FILE
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            row = json.loads(line)
            if "id" not in row:
                raise ValueError(f"{path}: line {line_no}: no 'id' field to pair prompts by")
            if row.get("exact_match") is not None:
                out[row["id"]] = bool(row["exact_match"])
    return out


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided binomial p of ``wins`` against ``losses`` under p = 1/2 (1.0 with no untied pair)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare(a: dict[tuple, bool], b: dict[tuple, bool], *, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """The paired comparison of two runs' ``{(seed, prompt id): correct}`` (module docstring); None when they
    share no graded pair. A run of seed None (a reference row evaluated once for a one-seed sweep: the teacher,
    the initial student) does not depend on the seed: it pairs with the other run's prompts under every seed."""
    a, b = _seedless_to(a, b), _seedless_to(b, a)
    keys = sorted(set(a) & set(b), key=str)
    if not keys:
        return None
    d = np.array([float(a[k]) - float(b[k]) for k in keys])
    prompts = sorted({k[1] for k in keys}, key=str)
    index = {p: i for i, p in enumerate(prompts)}
    cluster = np.array([index[k[1]] for k in keys])
    sums, counts = np.bincount(cluster, d, len(prompts)), np.bincount(cluster, None, len(prompts))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(prompts), size=(n_boot, len(prompts)))
    boot = 100.0 * sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    lo, hi = (float(x) for x in np.quantile(boot, [0.025, 0.975]))
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    verdict = "better" if lo > 0 else "worse" if hi < 0 else "can't tell"
    return {"delta": 100.0 * float(d.mean()), "ci": [lo, hi], "wins": wins, "losses": losses,
            "pairs": len(keys), "prompts": len(prompts), "p": sign_test(wins, losses), "verdict": verdict}  # fmt: skip


def _seedless_to(run: dict[tuple, bool], other: dict[tuple, bool]) -> dict[tuple, bool]:
    """``run`` with its seed-None outcomes repeated under each seed of ``other`` (unchanged if it has seeds)."""
    if any(s is not None for s, _ in run):
        return run
    return {(s, p): run[(None, p)] for s, p in other if s is not None and (None, p) in run} or run


def by_label(entries: Sequence[tuple[str, int | None, dict[str, bool]]]) -> dict[str, dict[tuple, bool]]:
    """``[(label, seed, {id: correct})]`` -> ``{label: {(seed, id): correct}}``; a label seen twice under one
    seed is an error (its runs could not be told apart)."""
    out: dict[str, dict[tuple, bool]] = {}
    seen = set()
    for label, seed, correct in entries:
        if (label, seed) in seen:
            raise ValueError(f"paired comparison: two runs labelled {label!r} under seed {seed}; label the rows "
                             "apart (eval_label) or compare one seed's runs")  # fmt: skip
        seen.add((label, seed))
        out.setdefault(label, {}).update({(seed, i): c for i, c in correct.items()})
    return out


def paired_table(entries: Sequence[tuple[str, int | None, dict[str, bool]]], against: Sequence[str]) -> str | None:
    """Markdown: every row against each label of ``against`` present (Δ EM [95 % CI], wins:losses, sign-test
    p, verdict). None when no label of ``against`` is among the rows."""
    runs = by_label(entries)
    baselines = [b for b in against if b in runs]
    if not baselines:
        return None
    header = ["Run", *(f"vs {b}" for b in baselines)]
    body = []
    for label, correct in runs.items():
        cells = []
        for base in baselines:
            result = None if label == base else compare(correct, runs[base])
            cells.append("-" if result is None else
                         f"{result['delta']:+.1f} [{result['ci'][0]:+.1f}, {result['ci'][1]:+.1f}] "
                         f"{result['wins']}:{result['losses']} p={result['p']:.2g} {result['verdict']}")  # fmt: skip
        body.append([label, *cells])
    notes = ["Δ EM in points, paired over (seed, prompt); [95 % cluster-bootstrap CI over prompts]; wins:losses = "
             "pairs only the row / only the baseline got right; p = exact two-sided sign test; verdict: better / "
             "worse when the interval excludes 0, else can't tell (prefdistill/eval/paired.py)"]  # fmt: skip
    return "Paired exact-match comparisons:\n\n" + markdown_table(header, body, notes=notes)

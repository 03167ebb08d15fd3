"""Results on disk, on the console and in W&B, and the cross-run comparison table.

One evaluation writes ``<out>/eval_results.json`` (metrics, scorer names, win-rate summaries with
CIs, judge counts, a few example generations) and ``<out>/generations.jsonl`` (every output).
The table has one row per run and the PLaD Table 1 columns -- word count, R-1, R-2, R-L, RM win rate
vs the reference, T-S win rate -- plus exact-match accuracy, judge win rate, GSM8K accuracy, the
offline scorer's columns and the row's cost (wall-clock seconds and tokens processed, ``utils/cost.py``)
when present. Exact match and win rates show their bootstrap 95 % interval (``value [lo, hi]``) when
the results hold one; exact match per task family follows as a second table. Offline-scorer columns
are headed ``offline:`` and a footnote names the scorer: they are not reward-model numbers.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from prefdistill.utils.atomic import atomic_write_json, atomic_write_text
from prefdistill.utils.cost import table_cost
from prefdistill.utils.markdown import markdown_table

log = logging.getLogger(__name__)

RESULTS_FILE = "eval_results.json"
# (metric key, header); a column is shown when any row has it.
COLUMNS = (
    ("word_count", "Word Count"),
    ("exact_match/overall", "EM (%)"),
    ("guarded/exact_match", "Guarded EM"),
    ("degeneracy/answer_rate", "Answered (%)"),
    ("degeneracy/distinct2", "Dist-2 (%)"),
    ("degeneracy/repeat2", "Rep-2 (%)"),
    ("degeneracy/length_ratio", "Len/ref"),
    ("rouge1", "R-1"),
    ("rouge2", "R-2"),
    ("rougeL", "R-L"),
    ("rm/win_rate", "RM WR (%)"),
    ("rm/ts_win_rate", "T-S WR (%)"),
    ("judge/win_rate", "Judge WR (%)"),
    ("judge/parse_failures", "Judge parse fail"),
    ("gsm8k/accuracy", "GSM8K acc (%)"),
    ("offline/score", "offline: score"),
    ("offline/win_rate", "offline: WR (%)"),
    ("offline/ts_win_rate", "offline: T-S WR (%)"),
    ("cost/seconds", "Time (s)"),
    ("cost/tokens", "Tokens"),
    ("n", "N"),
)
# metric key -> where its bootstrap interval is in the results' details (a summary with "ci")
CI_DETAILS = {
    "exact_match/overall": ("exact_match", "overall"),
    "rm/win_rate": ("rm/vs_reference",),
    "rm/ts_win_rate": ("rm/teacher_vs_student",),
    "offline/win_rate": ("offline/vs_reference",),
    "offline/ts_win_rate": ("offline/teacher_vs_student",),
    "judge/win_rate": ("judge/vs_reference",),
}


def write_results(out_dir: Path, result: dict, examples, outputs, teacher_outputs, per: dict) -> Path:
    """``eval_results.json`` + ``generations.jsonl``; returns the results path."""
    rows = []
    for i, ex in enumerate(examples):
        row = {"id": ex.id, "prompt": ex.prompt, "reference": ex.reference, "output": outputs[i]}
        if teacher_outputs is not None:
            row["teacher_output"] = teacher_outputs[i]
        row.update({k: v[i] for k, v in per.items()})
        rows.append(row)
    lines = "".join(json.dumps(r, default=str) + "\n" for r in rows)
    atomic_write_text(out_dir / "generations.jsonl", lines)
    result = {**result, "examples": rows[: result.get("n_examples", 20)]}
    return atomic_write_json(out_dir / RESULTS_FILE, result)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return str(int(value))
    return f"{value:.2f}"


def _cell(metrics: dict, key: str) -> str:
    """The value, with its interval as ``value [lo, hi]`` when ``metrics`` has ``<key>/ci``."""
    ci = metrics.get(f"{key}/ci")
    if ci is None or metrics.get(key) is None:
        return _fmt(metrics.get(key))
    return f"{_fmt(metrics[key])} [{ci[0]:.1f}, {ci[1]:.1f}]"


def format_table(rows: Sequence[tuple[str, dict]], footnotes: Iterable[str] = ()) -> str:
    """Markdown table, one row per ``(label, metrics)``, columns from :data:`COLUMNS` present in any row."""
    cols = [(k, h) for k, h in COLUMNS if any(k in m for _, m in rows)]
    header = ["Run"] + [h for _, h in cols]
    body = [[label] + [_cell(m, k) for k, _ in cols] for label, m in rows]
    return markdown_table(header, body, notes=footnotes)


def family_table(rows: Sequence[tuple[str, dict]]) -> str | None:
    """Exact match (%) per task family, one row per run (None when no row has exact match)."""
    families = sorted(
        {k.split("/", 1)[1] for _, m in rows for k in m if k.startswith("exact_match/")}
        - {"overall", "n", "overall/ci"}
    )
    if not families:
        return None
    header = ["Run", *families, "overall", "N"]
    body = [
        [label, *(_fmt(m.get(f"exact_match/{f}")) for f in families), _fmt(m.get("exact_match/overall")),
         _fmt(m.get("exact_match/n"))]
        for label, m in rows
    ]  # fmt: skip
    return "Exact match by task family (%):\n\n" + markdown_table(header, body)


def table_row(result: dict, results_file: str | Path | None = None) -> dict:
    """A result's metrics for the table: plus each interval of :data:`CI_DETAILS` (``<key>/ci``) and,
    given the results file, the row's cost (``cost.table_cost``)."""
    row = dict(result.get("metrics", {}))
    for key, path in CI_DETAILS.items():
        node = result.get("details", {})
        for part in path:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if key in row and isinstance(node, dict) and "ci" in node:
            row[f"{key}/ci"] = node["ci"]
    if results_file is not None:
        row.update(table_cost(result, results_file))
    return row


def footnotes(results: Iterable[dict]) -> list[str]:
    """Which scorer produced the RM / offline / judge columns (and that offline ones are stand-ins)."""
    notes = []
    for r in results:
        scorers = r.get("scorers", {})
        if "rm" in scorers:
            notes.append(
                f"RM = {scorers['rm']}; T-S WR = teacher output beats the evaluated model's (ties 1/2)"
            )
        if "offline" in scorers:
            notes.append(f"offline = {scorers['offline']} (offline stand-in, NOT a reward model)")
        if "judge" in scorers:
            notes.append(f"judge = {scorers['judge']}")
        if "exact_match/overall" in r.get("metrics", {}):
            notes.append(
                "EM = exact-match accuracy of the answer on the verifiable task families; [95 % bootstrap CI]"
            )
        if "degeneracy/answer_rate" in r.get("metrics", {}):
            notes.append("Answered = outputs giving an answer of their family's kind, right or wrong; Dist-2 = "
                         "distinct word bigrams of all outputs; Rep-2 = repeated bigrams within an output; "
                         "Len/ref = words vs the references' (prefdistill/eval/degeneracy.py)")  # fmt: skip
        if "guarded/exact_match" in r.get("metrics", {}):
            notes.append("Guarded EM = EM, minus 1000 where the outputs break the degeneracy guard")
    return notes


def cost_note(rows: Sequence[tuple[str, dict]]) -> list[str]:
    """What the cost columns count, and which parts recorded no tokens."""
    if not any("cost/seconds" in m for _, m in rows):
        return []
    notes = ["Time / Tokens = wall-clock seconds and tokens processed by the row: its training plus the "
             "pipeline stages it used (sampling, scoring, SFT; counted when reused too); evaluation excluded"]  # fmt: skip
    unknown = sorted({name for _, m in rows for name in m.get("cost/tokens_unknown", [])})
    if unknown:
        notes.append(f"Tokens leave out what recorded none (its seconds are in Time): {', '.join(unknown)}")
    return notes


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """``eval_results.json`` files: given directly, or found under run / multirun folders."""
    found: list[Path] = []
    for p in map(Path, paths):
        p = p.expanduser()
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(p.rglob(RESULTS_FILE))
        else:
            raise FileNotFoundError(f"compare: {p} does not exist")
    if not found:
        raise FileNotFoundError(f"compare: no {RESULTS_FILE} under {list(map(str, paths))}")
    return found


def mean_std_rows(rows: Sequence[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Rows of one label (one per seed) merged into one: every numeric column's ``{mean, std, n}`` (sample
    standard deviation, ddof 1; 0 for a single run), labels in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for label, metrics in rows:
        groups.setdefault(label, []).append(metrics)
    merged = []
    for label, runs in groups.items():
        stats = {}
        keys = dict.fromkeys(k for m in runs for k, v in m.items() if isinstance(v, (int, float)))
        for key in keys:
            values = [m[key] for m in runs if isinstance(m.get(key), (int, float))]
            values = [v for v in values if not math.isnan(v)]
            if values:
                mean = values[0] if len(set(values)) == 1 else sum(values) / len(values)  # counts stay ints
                var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
                stats[key] = {"mean": mean, "std": math.sqrt(var), "n": len(values)}
        merged.append((label, stats))
    return merged


def format_mean_std_table(rows: Sequence[tuple[str, dict]], footnotes: Iterable[str] = ()) -> str:
    """The table of :func:`mean_std_rows`: ``mean ± std`` per cell (a count equal in every run, such as N,
    shown once) and the number of runs per row."""
    cols = [(k, h) for k, h in COLUMNS if any(k in m for _, m in rows)]
    header = ["Run"] + [h for _, h in cols] + ["Seeds"]

    def cell(stat):
        if stat is None:
            return "-"
        if stat["n"] == 1 or (stat["std"] == 0 and isinstance(stat["mean"], int)):  # one run, or a count
            return _fmt(stat["mean"])
        return f"{_fmt(stat['mean'])} ± {_fmt(stat['std'])}"

    body = [
        [label] + [cell(m.get(k)) for k, _ in cols] + [str(max((s["n"] for s in m.values()), default=0))]
        for label, m in rows
    ]
    return markdown_table(header, body, notes=footnotes)


def compare(
    paths: Iterable[str | Path], out_dir: str | Path | None = None, *, paired_against: Sequence[str] = ()
) -> tuple[str, list[dict]]:
    """The comparison table of every result found under ``paths``; saved as compare.md/.json.

    When a label repeats (the same row run with several seeds), ``compare.md`` holds one row per label with
    ``mean ± std`` over its runs, and the table of every run is saved beside it as ``compare_per_seed.md``.
    ``paired_against``: row labels (e.g. ``SFT``, ``Initial student``) every row is compared with, paired over
    prompts and seeds on exact match (:mod:`prefdistill.eval.paired`), in a table after the others."""
    files = find_results(paths)
    results = [json.loads(f.read_text()) for f in files]
    rows = [(r.get("label") or f.parent.name, table_row(r, f)) for r, f in zip(results, files)]
    table = format_table(rows, footnotes(results) + cost_note(rows))
    families = family_table(rows)
    if families is not None:
        table += "\n\n" + families
    per_run = None
    if len({label for label, _ in rows}) < len(rows):
        per_run = table
        merged = mean_std_rows(rows)
        seeds = max(s["n"] for _, m in merged for s in m.values())
        notes = [f"mean ± std (sample, ddof 1) over up to {seeds} runs of each row (seeds); per-run table: "
                 "compare_per_seed.md", *footnotes(results), *cost_note(rows)]  # fmt: skip
        table = format_mean_std_table(merged, notes)
        families = family_table([(label, {k: st["mean"] for k, st in m.items()}) for label, m in merged])
        if families is not None:
            table += "\n\n" + families.replace("(%):", "(%), mean over seeds:", 1)
    if paired_against and any("exact_match/overall" in m for _, m in rows):
        from prefdistill.eval import paired

        entries = [(label, paired.seed_of(f), paired.correctness(f)) for (label, _), f in zip(rows, files)]
        paired_section = paired.paired_table(entries, paired_against)
        if paired_section is not None:
            table += "\n\n" + paired_section
    if out_dir is not None:
        out_dir = Path(out_dir)
        if per_run is not None:
            atomic_write_text(out_dir / "compare_per_seed.md", per_run + "\n")
        atomic_write_text(out_dir / "compare.md", table + "\n")
        atomic_write_json(
            out_dir / "compare.json",
            [{"label": lbl, "file": str(f), "metrics": m} for (lbl, m), f in zip(rows, files)],
        )
    return table, results


def log_wandb(result: dict, examples: list[dict], settings: dict, out_dir: Path) -> str | None:
    """Scalars + a table of example generations to the active W&B run (started if needed)."""
    import wandb

    own = wandb.run is None
    if own:
        wandb.init(
            project=settings.get("project", "prefdistill"), mode=settings.get("mode", "offline"),
            group=settings.get("group"), name=result.get("label"), job_type="eval", dir=str(out_dir),
            config={k: result.get(k) for k in ("suite", "model", "teacher", "scorers", "label")},
        )  # fmt: skip
    suite = result.get("suite", "eval")
    metrics = {f"eval/{suite}/{k}": v for k, v in result["metrics"].items() if isinstance(v, (int, float))}
    columns = sorted({k for row in examples for k in row}, key=lambda k: (k != "id", k != "prompt", k))
    table = wandb.Table(
        columns=columns,
        data=[
            [json.dumps(r.get(c)) if isinstance(r.get(c), list) else r.get(c) for c in columns]
            for r in examples
        ],
    )
    wandb.log({**metrics, f"eval/{suite}/examples": table})
    run_dir = str(wandb.run.dir)
    if own:
        wandb.finish()
    return run_dir

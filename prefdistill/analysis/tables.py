"""The method comparison of a runs table as markdown, one row per run, formatted as
``evaluate.py compare=...`` formats its tables (:func:`prefdistill.utils.markdown.markdown_table`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# Held-out metrics shown before -> after training, with their headers.
# "Acc" is TRL's (a tie counts as wrong: 0 while the policy equals the reference), "Acc (ties 1/2)" counts a
# tie as 1/2 (losses/terms.py).
HELD_OUT = (
    ("val/reward/accuracy", "Acc"),
    ("val/reward/accuracy_ties_half", "Acc (ties 1/2)"),
    ("val/reward/margin", "Margin"),
    ("val/loss", "Val loss"),
)


def comparison_columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    """``(column, header)`` pairs of the method comparison table: run identity, the swept
    hyper-parameters, held-out metrics before -> after, the training loss, and every evaluation
    column of :data:`prefdistill.eval.report.COLUMNS` any run has (as ``eval/<metric>``)."""
    from prefdistill.eval.report import COLUMNS

    cols = [("run", "Run"), ("method", "Method"), ("model", "Model")]
    cols += [(p, p.split(".")[-1]) for p in table.attrs.get("swept", [])]
    cols += [("global_step", "Steps")]
    for metric, header in HELD_OUT:
        if f"before/{metric}" in table:
            cols.append((f"before/{metric}", f"{header} before"))
        cols.append((metric, header))
    cols.append(("train/loss", "Train loss"))
    cols += [(f"eval/{key}", header) for key, header in COLUMNS if key != "n"]
    return [(c, h) for c, h in cols if c in table and table[c].notna().any()]


def _cell(value: Any, column: str = "") -> str:
    """One table cell: ``-`` for missing, counts as integers, other numbers to 3 decimals (3
    significant digits below 0.01)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or column in ("global_step", "eval/n") or abs(value) >= 1000:
        return str(int(value))
    return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:.3f}"


def comparison_table(table: pd.DataFrame, columns: Sequence[tuple[str, str]] | None = None) -> str:
    """The method comparison as a markdown table, one row per run (columns:
    :func:`comparison_columns`), with the evaluation's footnotes naming its scorers and a note
    listing the runs without metrics.json."""
    from prefdistill.eval.report import footnotes
    from prefdistill.utils.markdown import markdown_table

    columns = comparison_columns(table) if columns is None else list(columns)
    header = [h for _, h in columns]
    body = [[_cell(row.get(c), c) for c, _ in columns] for row in table.to_dict("records")]
    left = [j for j, (c, _) in enumerate(columns) if c in ("run", "method", "model")]
    notes = footnotes(table.attrs.get("eval", []))
    unfinished = [r for r, done in zip(table["run"], table["finished"]) if not done]
    if unfinished:
        notes.append(f"no metrics.json yet (running or stopped): {', '.join(map(str, unfinished))}")
    return markdown_table(header, body, left, notes)

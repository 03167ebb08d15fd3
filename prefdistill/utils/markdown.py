"""Aligned markdown tables, shared by every report that prints one (evaluation, the loss table, analysis)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(
    header: Sequence[str],
    body: Sequence[Sequence[str]],
    left: Iterable[int] = (0,),
    notes: Iterable[str] = (),
) -> str:
    """Aligned markdown table: columns in ``left`` left-aligned, the others right; ``notes`` (deduplicated)
    follow it, indented."""
    left = set(left)
    widths = [max(len(r[j]) for r in [header, *body]) for j in range(len(header))]

    def line(cells):
        padded = [c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *map(line, body), *(f"  {n}" for n in dict.fromkeys(notes))])

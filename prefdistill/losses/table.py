"""The table of every registered loss, rendered from the registry (so the two cannot drift apart).

    python -m prefdistill.losses                        # print the table
    python -m prefdistill.losses --write docs/losses.md  # replace the table between the markers in docs/losses.md

One row per registered loss: name, kind, aliases (e.g. TRL's ``loss_type`` names), what the training module
must provide with the default hyper-parameters (``needs``), the hyper-parameters with their defaults, a
one-line summary and the source. ``docs/losses.md`` holds the rendered table between ``<!-- losses:begin -->`` and
``<!-- losses:end -->``; ``tests/losses/test_table.py`` fails when they differ, so a loss registered later
shows up as a failing test until the table is regenerated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefdistill.losses.registry import REGISTRY, LossSpec, get_loss
from prefdistill.utils.markdown import markdown_table

BEGIN, END = "<!-- losses:begin -->", "<!-- losses:end -->"
HEADER = ("Loss", "Kind", "Aliases", "Needs (defaults)", "Hyper-parameters (defaults)", "What", "Source")


def _value(v) -> str:
    """A default as it is written in a config file (YAML): null, true/false, lists, plain numbers."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def row(spec: LossSpec) -> list[str]:
    """The table row of one registry entry."""
    hparams = ", ".join(f"`{k}={_value(v)}`" for k, v in spec.hparams.items())
    if spec.open_hparams:
        hparams = (hparams + ", " if hparams else "") + "any part's (shared)"
    return [
        f"`{spec.name}`",
        spec.kind,
        ", ".join(f"`{a}`" for a in spec.aliases),
        ", ".join(sorted(get_loss(spec.name).needs)) or "-",
        hparams or "-",
        _cell(spec.summary),
        _cell(spec.source),
    ]


def render() -> str:
    """The markdown table of every registered loss, sorted by name."""
    body = [row(REGISTRY[name]) for name in sorted(REGISTRY)]
    return markdown_table(HEADER, body, left=range(len(HEADER)))


def section(text: str) -> str:
    """The table between the markers of ``text`` (a ValueError naming the markers when they are missing)."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected one {BEGIN} ... {END} block")
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip("\n")


def replace(text: str) -> str:
    """``text`` with the block between the markers replaced by the freshly rendered table."""
    section(text)  # checks the markers
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{render()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="a markdown file whose marked block is replaced")
    args = parser.parse_args(argv)
    if args.write is None:
        print(render())
        return
    args.write.write_text(replace(args.write.read_text()))

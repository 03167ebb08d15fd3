"""docs/losses.md's loss table is the registry's: regenerate it with ``python -m prefdistill.losses --write docs/losses.md``."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefdistill.losses import REGISTRY
from prefdistill.losses.table import BEGIN, END, render, replace, section

LOSSES_DOC = Path(__file__).resolve().parents[2] / "docs" / "losses.md"


def test_readme_table_equals_the_registry():
    assert section(LOSSES_DOC.read_text()) == render(), (
        "docs/losses.md's loss table differs from the registry: run `python -m prefdistill.losses --write docs/losses.md`"
    )


def test_every_loss_has_a_row_with_its_defaults_aliases_and_source():
    lines = render().splitlines()
    assert len(lines) == 2 + len(REGISTRY)
    dpo = next(line for line in lines if line.startswith("| `dpo`"))
    for text in ("`sigmoid`", "`beta=0.1`", "`ld_alpha=null`", "`use_weighting=false`", "reference, rejected",
                 "arXiv 2305.18290"):  # fmt: skip
        assert text in dpo, text
    mixture = next(line for line in lines if line.startswith("| `mixture`"))
    assert "`losses=[dpo, sft]`" in mixture and "shared" in mixture


def test_write_replaces_only_the_marked_block():
    text = f"intro\n\n{BEGIN}\nstale\n{END}\nafter\n"
    out = replace(text)
    assert out.startswith("intro\n\n") and out.endswith(f"{END}\nafter\n")
    assert section(out) == render() and "stale" not in out
    with pytest.raises(ValueError, match="losses:begin"):
        replace("no markers here")

"""The study's validation search: one grid per row, every grid value a key of the composed config, the row's own
value first, the objective guarded, and the tuned rows composing on top of their rows."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from train_helpers import CONFIGS, compose_train, tiny_study_overrides

ROWS = sorted(p.stem for p in (CONFIGS / "row").glob("*.yaml") if not p.stem.endswith("_tuned"))
SEARCHES = sorted(
    p.stem.removeprefix("distill_") for p in (CONFIGS / "hparams_search").glob("distill_*.yaml")
)


def test_every_study_row_has_a_search_and_the_study_sweeps_every_row(tmp_path):
    assert SEARCHES == ROWS
    study = compose_train(tmp_path, ["experiment=distill_study"])
    assert sorted(study.hydra.sweeper.params.row.split(",")) == ROWS


@pytest.mark.parametrize("row", ROWS)
def test_a_row_search_sweeps_existing_keys_from_the_rows_own_value(row, tmp_path):
    search = compose_train(tmp_path, ["experiment=distill_search", f"hparams_search=distill_{row}"])
    row_cfg = compose_train(tmp_path, ["experiment=distill_study", f"row={row}"])
    params = dict(search.hydra.sweeper.params)
    assert "row" not in params and search.hydra.runtime.choices.row == row
    assert search.eval.data.split == "validation" and search.optimized_metric == "eval/guarded/exact_match"
    assert search.eval.guard and search.eval.degeneracy
    assert "module.optimizer.lr" in params
    for key, values in params.items():
        first = OmegaConf.select(row_cfg, key, throw_on_missing=True)
        assert first is not None, (row, key)
        given = OverridesParser.create().parse_override(f"{key}={str(values).split(',')[0]}").value()
        assert given == first, (row, key, first, values)  # the row's own value comes first
        for value in str(values).split(","):
            compose_train(
                tmp_path, ["experiment=distill_search", f"hparams_search=distill_{row}", f"{key}={value}"]
            )


@pytest.mark.slow
def test_a_search_ends_in_its_choice_and_a_relaunch_reuses_every_finished_job(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from train_helpers import REPO

    env = {
        **os.environ,
        "PREFDISTILL_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
    }
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "experiment=distill_search",
        "hparams_search=distill_sft",
        *tiny_study_overrides(tmp_path),
    ]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = tmp_path / "logs" / "distill_search" / "sft"  # one fixed folder per row
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 4 and all("module.optimizer.lr=" in j for j in jobs), jobs
    chosen = json.loads((sweep / "chosen.json").read_text())
    assert chosen["row"] == "sft" and set(chosen["overrides"]) == {"module.optimizer.lr"}
    assert "Search sft (row sft)" in (sweep / "search.md").read_text() and "chosen" in first.stdout
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("already finished with this configuration") == 4  # nothing trained twice
    assert json.loads((sweep / "chosen.json").read_text()) == chosen

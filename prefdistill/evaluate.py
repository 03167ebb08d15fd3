"""Evaluation entry point (Hydra app): ``python evaluate.py [overrides]`` or ``pd-eval [overrides]``.

Recipe: suite -> test prompts -> generate (model, then teacher for the T-S win rate) -> score
(ROUGE, word count, reward model / offline scorer / LLM judge, GSM8K) -> ``eval_results.json`` +
``generations.jsonl`` -> console table -> W&B table of example generations.

    python evaluate.py                                    # SmolLM2-135M-Instruct on the demo test split, offline scorer
    python evaluate.py run_dir=logs/train/runs/<time>     # a train.py run: <run>/model, results in <run>/eval_<suite>/
    python evaluate.py eval=tldr model=gpt_neo_1_3b teacher=gpt_neo_2_7b    # RM + T-S win rate + judge
    python evaluate.py compare=[logs/train/multiruns/<time>]               # one table, a row per run (any sweep)

``main`` returns ``optimized_metric`` (e.g. ``rm/win_rate``) for sweepers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from prefdistill.analysis.summary import compare_runs
from prefdistill.eval.runner import evaluate_model, resolve_run
from prefdistill.utils.config_groups import register_config_groups
from prefdistill.utils.run import (
    config_dir,
    exit_on_usage_error,
    metric_value,
    register_resolvers,
    task_wrapper,
)

log = logging.getLogger("prefdistill.evaluate")
register_config_groups()  # the teacher group (utils/config_groups.py)
register_resolvers()


@task_wrapper
def evaluate(cfg: DictConfig) -> dict:
    if cfg.get("compare"):  # evaluated runs: their comparison table; otherwise the runs' metrics.json summary
        paths = [cfg.compare] if isinstance(cfg.compare, str) else list(cfg.compare)
        table, written = compare_runs(paths, cfg.paths.output_dir)
        print(table, flush=True)
        log.info("comparison: %s", written)
        return {}
    suite = instantiate(cfg.eval, _convert_="all")
    if cfg.get("run_dir"):
        spec, teacher, label = resolve_run(cfg.run_dir)
        out_dir = Path(cfg.run_dir) / f"eval_{suite.name}"
    else:
        spec, teacher, label = instantiate(cfg.model), None, Path(cfg.model.name_or_path).name
        out_dir = Path(cfg.paths.output_dir)
    if cfg.get("teacher"):
        teacher = instantiate(cfg.teacher)
    wandb = OmegaConf.to_container(cfg.wandb, resolve=True) if cfg.get("wandb") else None
    result = evaluate_model(
        suite, spec, teacher=teacher, out_dir=out_dir, label=cfg.get("label") or label, wandb=wandb
    )
    return result["metrics"]


@hydra.main(config_path=config_dir(), config_name="eval", version_base="1.3")
@exit_on_usage_error
def main(cfg: DictConfig) -> float | None:
    metrics = evaluate(cfg)
    return metric_value(metrics, cfg.get("optimized_metric")) if metrics else None


if __name__ == "__main__":
    main()

"""Evaluation entry point (Hydra app): ``python evaluate.py [overrides]`` or ``pd-eval [overrides]``.

Recipe: suite -> test prompts -> generate (model, then teacher for the T-S win rate) -> score
(ROUGE, word count, reward model / offline scorer / LLM judge, GSM8K) -> ``eval_results.json`` +
``generations.jsonl`` -> console table -> W&B table of example generations.

    python evaluate.py                                    # SmolLM2-135M-Instruct on the demo test split, offline scorer
    python evaluate.py run_dir=logs/train/runs/<time>     # a train.py run: <run>/model, results in <run>/eval_<suite>/
    python evaluate.py eval=tldr model=gpt_neo_1_3b teacher=gpt_neo_2_7b    # RM + T-S win rate + judge
    python evaluate.py compare=[logs/train/multiruns/<time>]               # one table, a row per run

``main`` returns ``optimized_metric`` (e.g. ``rm/win_rate``) for sweepers.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from prefdistill.eval import report
from prefdistill.eval.suites import EvalSuite
from prefdistill.models import ModelSpec, run_spec
from prefdistill.utils.run import config_dir, metric_value, register_resolvers, task_wrapper

log = logging.getLogger("prefdistill.evaluate")
register_resolvers()


def build_generator(spec: ModelSpec, suite: EvalSuite):
    """The sampling backend for ``spec`` (a module-level seam: tests replace it with a fake)."""
    from prefdistill.generation import build_generator as build

    return build(spec, backend=suite.backend, batch_size=suite.batch_size, template=suite.template)


def generate(spec: ModelSpec, suite: EvalSuite, examples) -> list[str]:
    from prefdistill.generation import SamplingParams

    params = SamplingParams(**{**suite.generation, "n": 1})
    gen = build_generator(spec, suite)
    outputs = [row[0].strip() for row in gen.generate([ex.prompt for ex in examples], params)]
    del gen
    gc.collect()
    return outputs


def _servable_dir(run_dir: Path, base: ModelSpec) -> Path:
    """``<run>/model`` when it holds a full model; for a LoRA adapter, ``<run>/model/merged``
    (merged once here when train.py did not write it, so any backend can load one folder)."""
    model_dir = run_dir / "model"
    if not (model_dir / "adapter_config.json").is_file():
        return model_dir
    merged = model_dir / "merged"
    if not merged.is_dir():
        from peft import PeftModel

        from prefdistill.models import load_model, load_tokenizer
        from prefdistill.utils.atomic import atomic_dir

        log.info("merging the LoRA adapter of %s into %s", model_dir, merged)
        base_model = load_model(ModelSpec(**{**base.to_dict(), "lora": None}), trainable=False)
        model = PeftModel.from_pretrained(base_model, str(model_dir)).merge_and_unload()
        with atomic_dir(merged) as tmp:
            model.save_pretrained(tmp)
            load_tokenizer(ModelSpec(str(model_dir))).save_pretrained(tmp)
    return merged


def resolve_run(run_dir: str | Path) -> tuple[ModelSpec, ModelSpec | None, str]:
    """``(spec of the trained model, the run's teacher spec or None, a label)`` for a train.py run."""
    run_dir = Path(run_dir).expanduser()
    cfg_file = run_dir / "config_resolved.yaml"
    if not cfg_file.is_file() or not (run_dir / "model").is_dir():
        raise FileNotFoundError(
            f"{run_dir} is not a train.py run folder (needs config_resolved.yaml and model/)"
        )
    run_cfg = OmegaConf.load(cfg_file)
    # The specs the run trained with (after any pipeline stage: an SFT'd student is the base of its
    # LoRA adapter, an SFT'd teacher the T-S comparator); older runs: the config's.
    base = run_spec(run_dir, "policy")
    folder = _servable_dir(run_dir, base)
    spec = ModelSpec(str(folder), dtype=base.dtype, attn_implementation=base.attn_implementation,
                     trust_remote_code=base.trust_remote_code)  # fmt: skip
    teacher = run_spec(run_dir, "teacher")
    method = OmegaConf.select(run_cfg, "method.name")
    label = run_cfg.get("eval_label") or (f"{run_dir.name} ({method})" if method else run_dir.name)
    return spec, teacher, label


def evaluate_model(
    suite: EvalSuite,
    spec: ModelSpec,
    *,
    teacher: ModelSpec | None,
    out_dir: Path,
    label: str,
    wandb: dict | None,
) -> dict:
    """Generate, score, write ``eval_results.json``, print the table; returns the results dict."""
    started = time.time()
    examples = suite.load_examples()
    log.info("eval suite %s: %d prompts, model %s", suite.name, len(examples), spec.name_or_path)
    outputs = generate(spec, suite, examples)
    teacher_outputs = None
    if teacher is not None and suite.teacher_win_rate and suite.task == "pairs":
        teacher_outputs = generate(teacher, suite, examples)
    result = {
        "label": label,
        "suite": suite.name,
        "model": spec.to_dict(),
        "teacher": teacher and teacher.to_dict(),
    }
    if suite.task == "alpacaeval":
        from prefdistill.eval.alpaca import export_model_outputs

        rows = [{"instruction": ex.prompt, "dataset": ex.dataset} for ex in examples]
        result["paths"] = {
            "alpacaeval": str(export_model_outputs(rows, outputs, label, out_dir / "model_outputs.json"))
        }
    metrics, details, per = suite.score(
        examples, outputs, teacher_outputs, offline_model_spec=teacher or spec
    )
    result.update(
        metrics=metrics,
        scorers={k.split("/")[0]: v for k, v in details.items() if k.endswith("/scorer")},
        details={k: v for k, v in details.items() if not k.endswith("/scorer")},
        n_examples=suite.n_examples,
        wall_time_s=round(time.time() - started, 1),
    )
    path = report.write_results(out_dir, result, examples, outputs, teacher_outputs, per)
    table = report.format_table([(label, metrics)], report.footnotes([result]))
    print(table, flush=True)
    log.info("results: %s", path)
    if wandb and wandb.get("enabled"):
        written = json.loads(path.read_text())
        log.info("wandb:   %s", report.log_wandb(written, written["examples"], wandb, out_dir))
    return result


def _suite(node: DictConfig) -> EvalSuite:
    return instantiate(node, _convert_="all")


@task_wrapper
def evaluate(cfg: DictConfig) -> dict:
    if cfg.get("compare"):
        paths = [cfg.compare] if isinstance(cfg.compare, str) else list(cfg.compare)
        table, _ = report.compare(paths, cfg.paths.output_dir)
        print(table, flush=True)
        log.info("comparison: %s", Path(cfg.paths.output_dir) / "compare.md")
        return {}
    suite = _suite(cfg.eval)
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


def evaluate_after_train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Run ``cfg.eval`` (a configs/eval suite) on the model train.py just saved in ``run_dir``.

    Results go to ``<run>/eval_<suite>/``; the W&B table goes to the training run when one is open.
    Returns the metrics prefixed ``eval/`` (for metrics.json and the sweeper).
    """
    suite = _suite(cfg.eval)
    spec, teacher, label = resolve_run(run_dir)
    wandb = {"enabled": "wandb" in (cfg.get("logger") or {})}
    result = evaluate_model(
        suite, spec, teacher=teacher, out_dir=Path(run_dir) / f"eval_{suite.name}", label=label, wandb=wandb
    )
    return {f"eval/{k}": v for k, v in result["metrics"].items()}


@hydra.main(config_path=config_dir(), config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    metrics = evaluate(cfg)
    return metric_value(metrics, cfg.get("optimized_metric")) if metrics else None


if __name__ == "__main__":
    main()

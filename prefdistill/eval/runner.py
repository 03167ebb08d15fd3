"""Evaluate a model with a suite: generate on its prompts, score, write and print the results.

The library half of ``python evaluate.py`` (the app) and of the evaluation after training (``train.py``
with ``eval=<suite>``), and what the multirun comparison table runs for its reference rows:

    suite = EvalSuite(...)                                   # configs/eval/*.yaml, built by Hydra
    result = evaluate_model(suite, spec, teacher=teacher_spec, out_dir=out, label="DPO", wandb=None)
    metrics = evaluate_run(suite, "logs/train/runs/<run>", wandb={"enabled": True})   # a train.py run
"""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path

import yaml

from prefdistill.eval import report
from prefdistill.eval.cache import cached
from prefdistill.eval.suites import EvalSuite
from prefdistill.models import ModelSpec, run_spec

log = logging.getLogger("prefdistill.evaluate")


def build_generator(spec: ModelSpec, suite: EvalSuite):
    """The sampling backend for ``spec`` (a module-level seam: tests replace it with a fake)."""
    from prefdistill.generation import build_generator as build

    return build(spec, backend=suite.backend, batch_size=suite.batch_size, template=suite.template)


def generate(spec: ModelSpec, suite: EvalSuite, examples) -> list[str]:
    """One output per example; reused from ``suite.cache_dir`` when the same model generated on the same
    prompts with the same settings before (the teacher of every job of a table: ``eval/cache.py``)."""
    from prefdistill.generation import SamplingParams

    params = SamplingParams(**{**suite.generation, "n": 1})
    prompts = [ex.prompt for ex in examples]

    def run() -> list[str]:
        gen = build_generator(spec, suite)
        outputs = [row[0].strip() for row in gen.generate(prompts, params)]
        del gen
        gc.collect()
        return outputs

    if suite.cache_dir is None:
        return run()
    inputs = {"model": spec.identity(), "backend": suite.backend, "template": suite.template,
              "batch_size": suite.batch_size, "params": params.to_dict(), "prompts": prompts}  # fmt: skip
    return cached(suite.cache_dir, "generations", inputs, run, label=spec.name_or_path)


def servable_dir(run_dir: Path, base: ModelSpec) -> Path:
    """One folder any backend can load for a run's model: ``<run>/model`` when it holds a full model; for a
    LoRA adapter the merged copy ``save_merged=true`` wrote (``<run>/model/merged``), else one merged here
    into the cache (``<cache>/merged/<adapter + base key>/``, once per adapter): the run folder is not
    written to, and the log line says where the merged model is."""
    model_dir = run_dir / "model"
    if not (model_dir / "adapter_config.json").is_file():
        return model_dir
    if (model_dir / "merged").is_dir():
        return model_dir / "merged"
    from prefdistill.models.spec import file_fingerprint
    from prefdistill.utils.cache import hash_inputs

    adapter = [file_fingerprint(p) for p in sorted(model_dir.glob("adapter_*")) if p.is_file()]
    base = ModelSpec(**{**base.to_dict(), "lora": None})
    merged = base.resolved_cache_dir() / "merged" / hash_inputs({"adapter": adapter, "base": base.identity()})
    if not merged.is_dir():
        from peft import PeftModel

        from prefdistill.models import load_model, load_tokenizer
        from prefdistill.utils.atomic import atomic_dir

        model = PeftModel.from_pretrained(
            load_model(base, trainable=False), str(model_dir)
        ).merge_and_unload()
        with atomic_dir(merged) as tmp:
            model.save_pretrained(tmp)
            load_tokenizer(ModelSpec(str(model_dir))).save_pretrained(tmp)
    log.info("evaluating the LoRA adapter %s merged over %s into the cache: %s (the run folder is unchanged)",
             model_dir, base.name_or_path, merged)  # fmt: skip
    return merged


def resolve_run(run_dir: str | Path) -> tuple[ModelSpec, ModelSpec | None, str]:
    """``(spec of the trained model, the run's teacher spec or None, a label)`` for a train.py run."""
    run_dir = Path(run_dir).expanduser()
    cfg_file = run_dir / "config_resolved.yaml"
    if not cfg_file.is_file() or not (run_dir / "model").is_dir():
        raise FileNotFoundError(
            f"{run_dir} is not a train.py run folder (needs config_resolved.yaml and model/)"
        )
    run_cfg = yaml.safe_load(cfg_file.read_text()) or {}
    # The specs the run trained with (after any pipeline stage: an SFT'd student is the base of its
    # LoRA adapter, an SFT'd teacher the T-S comparator); older runs: the config's.
    base = run_spec(run_dir, "policy")
    folder = servable_dir(run_dir, base)
    spec = ModelSpec(str(folder), dtype=base.dtype, attn_implementation=base.attn_implementation,
                     trust_remote_code=base.trust_remote_code)  # fmt: skip
    teacher = run_spec(run_dir, "teacher")
    method = (run_cfg.get("method") or {}).get("name")
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


def evaluate_run(suite: EvalSuite, run_dir: str | Path, *, wandb: dict | None = None) -> dict[str, float]:
    """Evaluate the model a train.py run saved in ``run_dir`` (against the run's teacher).

    Results go to ``<run>/eval_<suite>/``; the W&B table goes to the training run when one is open.
    Returns the metrics prefixed ``eval/`` (for metrics.json and the sweeper).
    """
    spec, teacher, label = resolve_run(run_dir)
    out_dir = Path(run_dir) / f"eval_{suite.name}"
    result = evaluate_model(suite, spec, teacher=teacher, out_dir=out_dir, label=label, wandb=wandb)
    return {f"eval/{k}": v for k, v in result["metrics"].items()}

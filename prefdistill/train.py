"""Training entry point (Hydra app): ``python train.py [overrides]`` or ``pd-train [overrides]``.

Recipe: seed -> specs (policy, teacher) -> loss -> [pipeline: sample/score the training data,
cached] -> tokenizer + data -> module -> trainer ->
validate (before) -> fit -> validate (after) -> save a plain-transformers folder -> metrics JSON.
``main`` returns the configured ``optimized_metric`` so Hydra sweepers can optimise it.

    python train.py                                   # DPO + LoRA on SmolLM2-135M, shipped data, CPU
    python train.py method=simpo model=tiny           # another loss, the tiny test model
    python train.py -m model=tiny method.beta=0.1,0.5 trainer.max_steps=2
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from prefdistill.convert import save_final_policy
from prefdistill.models import load_tokenizer, record_run_spec
from prefdistill.utils.atomic import atomic_write_json, atomic_write_text
from prefdistill.utils.run import (
    config_dir,
    instantiate_dict,
    metric_value,
    register_resolvers,
    resolve_ckpt_path,
    task_wrapper,
)

log = logging.getLogger("prefdistill.train")
register_resolvers()


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def _validate(trainer: L.Trainer, module, datamodule, enabled: bool) -> dict[str, float]:
    if not enabled or trainer.limit_val_batches == 0:
        return {}
    if trainer.global_step > 0 and module.last_fit_validation_step == trainer.global_step:
        # fit already validated the final weights: reuse, don't run the split twice
        return {k: v for k, v in _scalars(trainer.callback_metrics).items() if k.startswith("val/")}
    results = trainer.validate(module, datamodule=datamodule, verbose=False)
    return _scalars(results[0]) if results else {}


def _wandb_dir(loggers) -> str | None:
    for lg in loggers:
        if type(lg).__name__ == "WandbLogger":
            return str(Path(lg.experiment.dir).parent)  # the offline-run-* folder (wandb sync <it>)
    return None


def _run_pipeline(cfg: DictConfig, student, teacher):
    """Run the stages before training (PLaD pairs, PAD lists, an SFT of the policy): cached, reused
    when present. Returns the specs to train with and the data overrides: none when the pipeline
    made no data (``Prepared.path`` is None), so the configured data is trained on."""
    if teacher is None and cfg.pipeline.get("needs_teacher", True):
        raise ValueError(
            "this method builds its data with a teacher: add teacher=<model config>, e.g. teacher=tiny"
        )
    from prefdistill.generate import prompt_source

    prepare = instantiate(cfg.pipeline.prepare)
    source = prompt_source(cfg.data, "train", cfg.data.get("max_samples"))
    prepared = prepare(student, teacher, source, cache_dir=cfg.paths.cache_dir)
    stages = ", ".join(f"{stage.name} {stage.status}" for stage in prepared.stages)
    log.info("pipeline: %s -> %s %s", stages, prepared.path or "the configured data", prepared.stats)
    if prepared.path is None:
        return prepared.student, prepared.teacher, {}
    data = {
        **OmegaConf.to_container(cfg.pipeline.data, resolve=True),
        "source": "local",
        "path": str(prepared.path),
        "splits": {"train": "train", "validation": None, "test": None},
        "max_samples": None,
    }
    return prepared.student, prepared.teacher, data


@task_wrapper
def train(cfg: DictConfig) -> dict:
    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    policy_spec = instantiate(cfg.model)
    teacher_spec = instantiate(cfg.teacher) if cfg.get("teacher") else None
    loss = instantiate(cfg.method)
    log.info("loss: %s", loss)
    from prefdistill.preflight import check  # every model and data source resolves, memory fits

    plan = check(OmegaConf.to_container(cfg, resolve=True), policy_spec, teacher_spec, loss)
    if cfg.get("preflight_only"):  # print the plan (stages, models, memory per device) and stop
        print(plan.render())
        return {}
    data_overrides = {}
    if cfg.get("pipeline"):
        policy_spec, teacher_spec, data_overrides = _run_pipeline(cfg, policy_spec, teacher_spec)
    tokenizer = load_tokenizer(policy_spec)
    # plain containers: checkpoints stay weights_only-safe
    datamodule = instantiate(cfg.data, _convert_="all", **data_overrides)
    datamodule.connect(tokenizer)
    # A partial, so the specs and the loss reach the constructor as objects, not configs. The teacher
    # goes to the module only when the loss runs it; pipelines use it upstream otherwise.
    models = {"policy": policy_spec, **({"teacher": teacher_spec} if "teacher" in loss.needs else {})}
    module = instantiate(cfg.module, _partial_=True)(loss=loss, **models)

    loggers = instantiate_dict(cfg.get("logger"))
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=instantiate_dict(cfg.get("callbacks")), logger=loggers or False
    )
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg.paths.output_dir)  # before any validate(): see its doc
    before = _validate(trainer, module, datamodule, cfg.validate_before_fit)
    # the specs trained with, after the pipeline: `pd-convert` and evaluation rebuild the models from them
    for role, spec in (("policy", policy_spec), ("teacher", teacher_spec)):
        if spec is not None:
            record_run_spec(spec, out_dir, role)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    # read before validate(): it resets the metrics the fit loop logged
    train_metrics = {k: v for k, v in _scalars(trainer.callback_metrics).items() if k.startswith("train/")}
    after = _validate(trainer, module, datamodule, cfg.validate_after_fit)

    model_dir = None
    if cfg.save_model and not trainer.fast_dev_run:  # on every rank: ZeRO-3 gathers the weights first
        model_dir = save_final_policy(
            trainer, module, policy_spec, tokenizer, out_dir / "model", merge=cfg.merge_lora
        )  # the folder on global rank 0, None elsewhere
    if cfg.get("eval") and model_dir is not None:
        from prefdistill.evaluate import evaluate_after_train

        after = {**after, **evaluate_after_train(cfg, out_dir)}
    result = {
        "before": before,
        "after": after,
        "train": train_metrics,
        "global_step": trainer.global_step,
        "skipped_nonfinite_steps": module.bad_steps_total,
        "data": getattr(datamodule, "stats", {}),
        "wall_time_s": round(time.time() - started, 1),
        "paths": {
            "run": str(out_dir),
            "model": str(model_dir) if model_dir else None,
            "wandb": _wandb_dir(loggers),
        },
    }
    metrics_path = atomic_write_json(out_dir / "metrics.json", result)
    log.info("model:   %s", result["paths"]["model"])
    log.info("metrics: %s", metrics_path)
    log.info("wandb:   %s", result["paths"]["wandb"])
    for name in sorted(set(before) | set(after)):
        log.info(
            "%-28s before %9.4f   after %9.4f",
            name,
            before.get(name, float("nan")),
            after.get(name, float("nan")),
        )
    return {**after, **{f"before/{k}": v for k, v in before.items()}, **train_metrics}


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return None if cfg.get("preflight_only") else metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()

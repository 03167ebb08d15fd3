"""Training entry point (Hydra app): ``python train.py [overrides]`` or ``pd-train [overrides]``.

Recipe: seed -> specs (policy, teacher) -> loss -> trainer (its ranks started and connected) ->
[pipeline: sample/score the training data, cached, split across ranks] -> tokenizer + data -> module ->
validate (before) -> fit -> validate (after) -> save a plain-transformers folder -> metrics JSON (rank 0).
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
from prefdistill.eval.cost import record_stage_costs, run_cost
from prefdistill.eval.runner import evaluate_run
from prefdistill.generation.shards import PromptSource
from prefdistill.models import ModelSpec, load_tokenizer, record_run_spec
from prefdistill.pipeline.run import data_overrides, run_pipeline
from prefdistill.preflight import check
from prefdistill.utils.atomic import atomic_write_json, atomic_write_text
from prefdistill.utils.distributed import start_ranks, stop_ranks
from prefdistill.utils.fit import log_before_after, scalars, validated, wandb_dir
from prefdistill.utils.run import (
    config_dir,
    instantiate_dict,
    metric_value,
    register_resolvers,
    resolve_ckpt_path,
    task_wrapper,
    teacher_nodes,
)

log = logging.getLogger("prefdistill.train")
register_resolvers()


@task_wrapper
def train(cfg: DictConfig) -> dict:
    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    policy_spec = instantiate(cfg.model)
    teacher = teacher_nodes(cfg)  # several (teacher=[a,b]): a weighted mixture, module.teacher_weights
    teacher_spec = [instantiate(n) for n in teacher] if isinstance(teacher, list) else instantiate(teacher)
    loss = instantiate(cfg.method)
    log.info("loss: %s", loss)
    plan = check(OmegaConf.to_container(cfg, resolve=True), policy_spec, teacher_spec, loss)  # resolves, fits
    if cfg.get("preflight_only"):  # print the plan (stages, models, memory per device) and stop
        print(plan.render())
        return {}

    loggers = instantiate_dict(cfg.get("logger"))
    callbacks = instantiate_dict(cfg.get("callbacks"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        start_ranks(trainer)  # every rank runs from here on: stages and caches split their work by rank
        return _train(cfg, trainer, loggers, policy_spec, teacher_spec, loss, started)
    except BaseException:
        stop_ranks(trainer)
        raise


def _train(
    cfg: DictConfig, trainer: L.Trainer, loggers: list, policy_spec, teacher_spec, loss, started
) -> dict:
    out_dir = Path(cfg.paths.output_dir)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if cfg.get("pipeline") and not isinstance(teacher_spec, (ModelSpec, type(None))):
        raise ValueError("pipeline stages run one local teacher model; not a served teacher or a mixture")
    if cfg.get("pipeline"):  # stages before training (PLaD pairs, PAD lists, an SFT): cached
        source = PromptSource.of_split(data, "train", data.get("max_samples"))
        prepare = instantiate(cfg.pipeline.prepare)
        needs_teacher = cfg.pipeline.get("needs_teacher", True)
        prepared = run_pipeline(
            prepare, policy_spec, teacher_spec, source, cache_dir=cfg.paths.cache_dir, needs_teacher=needs_teacher
        )  # fmt: skip
        if trainer.is_global_zero:
            record_stage_costs(prepared.stages, out_dir)
        policy_spec, teacher_spec = prepared.student, prepared.teacher
        data |= data_overrides(prepared, OmegaConf.to_container(cfg.pipeline.data, resolve=True))
    tokenizer = load_tokenizer(policy_spec)
    datamodule = instantiate(data, _convert_="all")  # plain containers: checkpoints stay weights_only-safe
    datamodule.connect(tokenizer)
    # The specs and the loss reach the module as objects; the teacher only when the loss runs it
    # (pipelines use it upstream otherwise).
    models = {"policy": policy_spec, **({"teacher": teacher_spec} if "teacher" in loss.needs else {})}
    module = instantiate(cfg.module, _partial_=True)(loss=loss, **models)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg.paths.output_dir)  # before any validate(): see its doc
    before = validated(trainer, module, datamodule, cfg.validate_before_fit)
    for role, spec in (("policy", policy_spec), ("teacher", teacher_spec)):  # what pd-convert / eval rebuild
        if isinstance(spec, ModelSpec) and trainer.is_global_zero:  # a server or a mixture is in the config
            record_run_spec(spec, out_dir, role)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    train_metrics = scalars(trainer.callback_metrics, "train/")  # before validate() resets them
    after = validated(trainer, module, datamodule, cfg.validate_after_fit)

    model_dir = None
    if cfg.save_model and not trainer.fast_dev_run:  # on every rank: ZeRO-3 gathers the weights first
        model_dir = save_final_policy(
            trainer, module, policy_spec, tokenizer, out_dir / "model", merge=cfg.merge_lora
        )  # fmt: skip  (the folder on rank 0, None elsewhere)
    if cfg.get("eval") and model_dir is not None:
        suite = instantiate(cfg.eval, _convert_="all")
        after |= evaluate_run(suite, out_dir, wandb={"enabled": "wandb" in (cfg.get("logger") or {})})
    metrics = {**after, **{f"before/{k}": v for k, v in before.items()}, **train_metrics}
    if not trainer.is_global_zero:  # every rank holds the same (reduced) metrics; rank 0 writes them
        return metrics
    result = {
        "before": before,
        "after": after,
        "train": train_metrics,
        "global_step": trainer.global_step,
        "skipped_nonfinite_steps": module.bad_steps_total,
        "data": getattr(datamodule, "stats", {}),
        "wall_time_s": round(time.time() - started, 1),
        "cost": run_cost(out_dir, trainer),  # pipeline stages + fit: seconds and tokens (eval/cost.py)
        "paths": {"run": str(out_dir), "model": model_dir and str(model_dir), "wandb": wandb_dir(loggers)},
    }
    log.info("metrics: %s", atomic_write_json(out_dir / "metrics.json", result))
    log.info("model:   %s", result["paths"]["model"])
    log.info("wandb:   %s", result["paths"]["wandb"])
    log_before_after(before, after)
    return metrics


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return None if cfg.get("preflight_only") else metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()

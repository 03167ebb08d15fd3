"""Training entry point (Hydra app): ``python train.py [overrides]`` or ``pd-train [overrides]``.

Recipe: seed -> the run's objects (specs, loss, data chain, module factory; nothing loaded) -> preflight
(asks them what they load and run) -> trainer (its ranks started and connected) -> [the chain: sample/score
the training data, cached, split across ranks] -> tokenizer + data -> module ->
validate (before) -> fit -> validate (after) -> save a plain-transformers folder -> metrics JSON (rank 0).
``main`` returns the configured ``optimized_metric`` so Hydra sweepers can optimise it.

    python train.py                                   # DPO + LoRA on SmolLM2-135M, shipped data, CPU
    python train.py method=simpo model=tiny           # another loss, the tiny test model
    python train.py -m model=tiny method.beta=0.1,0.5 trainer.max_steps=2
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from prefdistill.callbacks import fit_totals
from prefdistill.convert import save_final_policy
from prefdistill.eval.runner import evaluate_run
from prefdistill.generation.shards import PromptSource
from prefdistill.models import ModelSpec, load_tokenizer, record_run_spec
from prefdistill.models.served import ServedTeacher
from prefdistill.pipeline import Chain
from prefdistill.preflight import check
from prefdistill.utils.atomic import atomic_write_json, atomic_write_text
from prefdistill.utils.config_groups import register_config_groups, teacher_nodes
from prefdistill.utils.cost import record_stage_costs, run_cost
from prefdistill.utils.distributed import start_ranks, stop_ranks
from prefdistill.utils.fit import log_before_after, scalars, validated, wandb_dir
from prefdistill.utils.run import (
    config_dir,
    instantiate_dict,
    metric_value,
    register_resolvers,
    resolve_ckpt_path,
    task_wrapper,
)

log = logging.getLogger("prefdistill.train")
register_config_groups()  # the teacher group (utils/config_groups.py)
register_resolvers()


@task_wrapper
def train(cfg: DictConfig) -> dict:
    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    run = RunObjects.build(cfg)  # specs, loss, data chain, module factory: built, nothing loaded or run
    if run.chain is not None and not isinstance(run.teacher, (ModelSpec, type(None))):
        raise ValueError("pipeline stages run one local teacher model; not a served teacher or a mixture")
    log.info("loss: %s", run.loss)
    plan = check(  # asks the objects what they will load and run; resolves every model and dataset; fits
        OmegaConf.to_container(cfg, resolve=True), run.policy, run.teacher, run.loss,
        module=run.module(run.policy, run.teacher), chain=run.chain,
    )  # fmt: skip
    if cfg.get("preflight_only"):  # print the plan (stages, models, memory per device) and stop
        print(plan.render())
        return {}

    loggers = instantiate_dict(cfg.get("logger"))
    callbacks = instantiate_dict(cfg.get("callbacks"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        start_ranks(trainer)  # every rank runs from here on: stages and caches split their work by rank
        return _train(cfg, trainer, loggers, run, started)
    except BaseException:
        stop_ranks(trainer)
        raise


@dataclass
class RunObjects:
    """What a run is made of, built from its config before anything loads: the policy and teacher specs, the
    loss, the data chain (None without a pipeline) and the factory of the training module."""

    policy: ModelSpec
    teacher: ModelSpec | ServedTeacher | list | None  # a list: several teachers, mixed
    loss: object
    chain: Chain | None
    module_factory: object

    @classmethod
    def build(cls, cfg: DictConfig) -> RunObjects:
        return cls(
            policy=instantiate(cfg.model),
            teacher=_teacher(teacher_nodes(cfg)),
            loss=instantiate(cfg.method),
            chain=instantiate(cfg.pipeline.prepare) if cfg.get("pipeline") else None,
            module_factory=instantiate(cfg.module, _partial_=True),
        )

    def module(self, policy, teacher):
        """The training module of these specs; the teacher goes in only when the loss runs it (a pipeline
        uses it upstream otherwise). None when the loss needs a teacher and there is none (preflight says so)."""
        if "teacher" in self.loss.needs and teacher is None:
            return None
        models = {"policy": policy, **({"teacher": teacher} if "teacher" in self.loss.needs else {})}
        return self.module_factory(loss=self.loss, **models)


def _teacher(node):
    """The teacher spec of a ``teacher`` node (a model or a server), or the list of several teachers' specs."""
    return [instantiate(n) for n in node] if isinstance(node, list) else instantiate(node)


def _train(cfg: DictConfig, trainer: L.Trainer, loggers: list, run: RunObjects, started) -> dict:
    out_dir = Path(cfg.paths.output_dir)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    policy_spec, teacher_spec = run.policy, run.teacher
    if run.chain is not None:  # stages before training (PLaD pairs, PAD lists, an SFT): cached
        source = PromptSource.of_split(data, "train", data.get("max_samples"))
        prepared = run.chain(policy_spec, teacher_spec, source, cache_dir=cfg.paths.cache_dir)
        if trainer.is_global_zero:
            record_stage_costs(prepared.stages, out_dir)
        policy_spec, teacher_spec = prepared.student, prepared.teacher
        data |= prepared.data_overrides(OmegaConf.to_container(cfg.pipeline.data, resolve=True))
    tokenizer = load_tokenizer(policy_spec)
    datamodule = instantiate(data, _convert_="all")  # plain containers: checkpoints stay weights_only-safe
    datamodule.connect(tokenizer)
    module = run.module(policy_spec, teacher_spec)  # the specs and the loss reach the module as objects
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
        "cost": run_cost(out_dir, fit_totals(trainer)),  # pipeline stages + fit: seconds, tokens (utils/cost.py)
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

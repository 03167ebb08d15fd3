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
from prefdistill.convert import describe_saved, save_final_policy, saved_model
from prefdistill.eval.runner import evaluate_run
from prefdistill.generation.shards import PromptSource
from prefdistill.models import ModelSpec, load_tokenizer, record_run_spec
from prefdistill.models.served import ServedTeacher
from prefdistill.pipeline import Chain
from prefdistill.preflight import check
from prefdistill.utils.atomic import atomic_write_json, atomic_write_text
from prefdistill.utils.config_groups import register_config_groups, teacher_nodes
from prefdistill.utils.cost import record_stage_costs, run_cost
from prefdistill.utils.csv_logger import AppendingCSVLogger
from prefdistill.utils.distributed import start_ranks, stop_ranks
from prefdistill.utils.errors import UsageError
from prefdistill.utils.fit import log_before_after, scalars, validated, wandb_dir, wandb_url
from prefdistill.utils.resume import Start, check_start, fingerprint, finished, recording_callback
from prefdistill.utils.run import (
    config_dir,
    discard_run_folder,
    exit_on_usage_error,
    instantiate_dict,
    metric_value,
    newest_checkpoint,
    register_resolvers,
    resolve_ckpt_path,
    task_wrapper,
)

log = logging.getLogger("prefdistill.train")
register_config_groups()  # the teacher group (utils/config_groups.py)
register_resolvers()


RESUME_MODES = ("check", "force")


def _start(cfg: DictConfig, config: dict) -> Start:
    """Where this launch starts; refuses (``RunConfigChanged``) to continue a run folder trained with another
    configuration unless ``resume=force`` (``utils/resume.py``)."""
    if cfg.resume not in RESUME_MODES:
        raise UsageError(f"resume must be one of {RESUME_MODES}, got {cfg.resume!r}")
    out_dir = Path(cfg.paths.output_dir)
    ckpt = newest_checkpoint(out_dir) if cfg.ckpt_path == "auto" else cfg.ckpt_path
    steps = cfg.trainer.max_steps
    total = str(steps) if steps and steps > 0 else f"{cfg.trainer.max_epochs} epoch(s)"
    return check_start(out_dir, fingerprint(config), run_name=out_dir.name, ckpt_path=ckpt and str(ckpt),
                       force=cfg.resume == "force", total=total)  # fmt: skip


@task_wrapper
def train(cfg: DictConfig) -> dict:
    started = time.time()
    out_dir = Path(cfg.paths.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    start = _start(cfg, config)  # before anything is written into the run folder
    if cfg.reuse_finished and (done := finished(out_dir, config)) is not None:
        log.info("run %s already finished with this configuration: its metrics.json is reused (reuse_finished="
                 "false trains and evaluates it again)", out_dir.name)  # fmt: skip
        return flat_metrics(done)
    log.info("%s", start.describe())
    atomic_write_text(out_dir / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)

    run = RunObjects.build(cfg)  # specs, loss, data chain, module factory: built, nothing loaded or run
    if run.chain is not None and not isinstance(run.teacher, (ModelSpec, type(None))):
        raise UsageError("pipeline stages run one local teacher model; not a served teacher or a mixture")
    log.info("loss: %s", run.loss)
    plan = check(  # asks the objects what they will load and run; resolves every model and dataset; fits
        config, run.policy, run.teacher, run.loss, module=run.module(run.policy, run.teacher), chain=run.chain
    )
    if cfg.get("preflight_only"):  # print the plan (stages, models, memory per device) and stop
        print(plan.render())
        discard_run_folder(out_dir, "preflight_only")
        return {}
    log.info("%s", plan.render())

    loggers = instantiate_dict(cfg.get("logger"))
    callbacks = instantiate_dict(cfg.get("callbacks"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        start_ranks(trainer)  # every rank runs from here on: stages and caches split their work by rank
        return _train(cfg, trainer, loggers, run, started, start, config)
    except BaseException:
        stop_ranks(trainer)
        raise


def flat_metrics(result: dict) -> dict:
    """What ``main`` returns to a sweeper: held-out metrics after, ``before/<name>``, and the training metrics."""
    before = {f"before/{k}": v for k, v in result.get("before", {}).items()}
    return {**result.get("after", {}), **before, **result.get("train", {})}


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


def _train(
    cfg: DictConfig,
    trainer: L.Trainer,
    loggers: list,
    run: RunObjects,
    started: float,
    start: Start,
    config: dict,
) -> dict:
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
    if trainer.is_global_zero and start.step >= 0:  # the step history continues where the checkpoint stands
        for lg in loggers:
            if isinstance(lg, AppendingCSVLogger):
                lg.keep_steps_before(start.step)
    # A resumed run's "before" pass (the initial weights again) is not logged twice: the first launch logged it.
    before = validated(trainer, module, datamodule, cfg.validate_before_fit, logged=start.checkpoint is None)
    for role, spec in (("policy", policy_spec), ("teacher", teacher_spec)):  # what pd-convert / eval rebuild
        if isinstance(spec, ModelSpec) and trainer.is_global_zero:  # a server or a mixture is in the config
            record_run_spec(spec, out_dir, role)
    trainer.callbacks.append(recording_callback(out_dir, fingerprint(config), start))  # run_fingerprint.json
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    train_metrics = scalars(trainer.callback_metrics, "train/")  # before validate() resets them
    after = validated(trainer, module, datamodule, cfg.validate_after_fit)

    model_dir = None
    if cfg.save_model and not trainer.fast_dev_run:  # on every rank: ZeRO-3 gathers the weights first
        model_dir = save_final_policy(
            trainer, module, policy_spec, tokenizer, out_dir / "model", merge=cfg.save_merged
        )  # fmt: skip  (the folder on rank 0, None elsewhere)
    if cfg.get("eval") and model_dir is not None:
        suite = instantiate(cfg.eval, _convert_="all")
        after |= evaluate_run(suite, out_dir, wandb={"enabled": "wandb" in (cfg.get("logger") or {})})
    metrics = flat_metrics({"before": before, "after": after, "train": train_metrics})
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
        "cost": run_cost(
            out_dir, fit_totals(trainer)
        ),  # pipeline stages + fit: seconds, tokens (utils/cost.py)
        "paths": {
            "run": str(out_dir),
            "model": model_dir and str(model_dir),
            "wandb": wandb_dir(loggers),
            "wandb_url": wandb_url(loggers),
        },  # fmt: skip
        "model": model_dir and saved_model(model_dir, policy_spec),  # LoRA adapter over <base>, or full model
        "resume": {"started_at_step": start.step, "forced": start.forced},  # resume=force is recorded here
    }
    log.info("metrics: %s", atomic_write_json(out_dir / "metrics.json", result))
    log.info("model:   %s", model_dir and f"{model_dir} ({describe_saved(result['model'])})")
    log.info("wandb:   %s", result["paths"]["wandb"])
    log_before_after(before, after)
    return metrics


@hydra.main(config_path=config_dir(), config_name="train", version_base="1.3")
@exit_on_usage_error
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return None if cfg.get("preflight_only") else metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()

"""Helpers for tests that compose the real Hydra train config (imported by name: unique module)."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

TINY_OVERRIDES = [
    "model=tiny",
    "hardware=cpu",
    "logger=none",
    "data.max_samples=16",
    "data.batch_size=4",
    "trainer.max_steps=2",
    "trainer.limit_val_batches=1",
    "callbacks.model_checkpoint.every_n_train_steps=1",
]


# Every train/loss* of a tiny run stays within this. The largest honest values are the squared losses at
# zero margin (policy = reference): IPO (1 / (2 beta))^2 = 25 at beta = 0.1, SPPO-hard 50; a random model's
# NLL is about ln 624 = 6.4 per token; divergences between two random tiny models are of that order. NaN,
# inf or a blow-up fail.
LOSS_BOUND = 100.0


def good_pair(i: int) -> dict:
    """A well-formed preference row of a local ``.jsonl`` file (id ``g<i>``)."""
    return {
        "id": f"g{i}",
        "prompt": f"What is {i} plus {i}?",
        "chosen": f"It is {2 * i}.",
        "rejected": "No idea.",
    }


def assert_sane_losses(metrics: dict, run_dir: str | Path) -> None:
    """Every ``train/loss*`` of ``metrics`` finite and below ``LOSS_BOUND`` in size, and ``metrics.json`` in
    ``run_dir`` counts no step skipped for a non-finite loss."""
    losses = {k: v for k, v in metrics.items() if k.startswith("train/loss")}
    assert losses, sorted(metrics)
    for key, value in losses.items():
        assert math.isfinite(value) and abs(value) < LOSS_BOUND, (key, value)
    assert json.loads((Path(run_dir) / "metrics.json").read_text())["skipped_nonfinite_steps"] == 0


def tiny_study_overrides(tmp_path: Path) -> list[str]:
    """The distillation study's set-up (experiment=distill_base and the experiments on it) shrunk to the tiny
    models: few prompts and steps, one-step SFTs, a 2-step reward model, no logger, runs under ``tmp_path``."""
    return [
        "model=tiny", "teacher=tiny", "data.max_samples=8", "data.batch_size=2", "trainer.max_steps=2",
        "pipeline.sft_student.max_steps=1", "pipeline.sft_teacher.max_steps=1", "eval.data.max_samples=4",
        "eval.generation.max_new_tokens=4", "eval.reward.max_steps=2", "eval.reward.batch_size=2",
        "eval.reward.data.max_samples=8", "logger=none", f"paths.root_dir={tmp_path}",
    ]  # fmt: skip


def compose_train(tmp_path: Path, overrides: list[str] | None = None, config_name: str = "train"):
    """Compose configs/train.yaml as `python train.py` would, with outputs under tmp_path."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from prefdistill.utils.config_groups import register_config_groups
    from prefdistill.utils.run import register_resolvers

    register_config_groups()
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    # Every composed run gets its own folder (runs resume from their folder's last.ckpt);
    # the cache folder is shared by the runs of one test, as it is by the jobs of a sweep.
    runs = sorted((tmp_path / "runs").glob("*")) if (tmp_path / "runs").is_dir() else []
    out = tmp_path / "runs" / f"{len(runs):03d}"
    out.mkdir(parents=True)
    with open_dict(cfg):
        cfg.setdefault("paths", {})
        cfg.paths.output_dir = str(out)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


def method_loss(name: str, tmp_path: Path | None = None):
    """The Loss that `method=<name>` builds (method files may compose others through defaults)."""
    import tempfile

    from hydra.utils import instantiate

    cfg = compose_train(Path(tmp_path or tempfile.mkdtemp()), [f"method={name}"])
    return instantiate(cfg.method)


def perturb_lora(model) -> None:
    """LoRA B starts at zero (adapter = identity); give it seeded weights so the adapter matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def offline_private_cache(monkeypatch, tmp_path):
    """One thread, no hub, and a cache folder of the test's own. A conftest makes it a fixture:
    ``_offline = pytest.fixture(autouse=True)(offline_private_cache)``."""
    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PREFDISTILL_CACHE", str(tmp_path / "pd_cache"))


def model_key(spec) -> tuple:
    """A loaded model as the plan/run comparison names it: where it comes from and, for a random init, its seed."""
    return spec.name_or_path, spec.seed if spec.random_init is not None else None


def record_run(monkeypatch) -> dict:
    """Watch a ``train()`` run in this process: every ``load_model`` call as ``(model_key, trainable, phase)``
    (phase ``pipeline`` while the data chain runs, else ``training``), the preflight plan, and the training
    module built after the chain (``modules``: every module ``RunObjects.module`` built, preflight's first)."""
    import sys

    import prefdistill.models.load as loading
    from prefdistill import train as entry
    from prefdistill.pipeline import Chain

    seen = {"loads": [], "phase": "training", "plan": None, "modules": []}
    original = loading.load_model

    def load_model(spec, *args, trainable=True, **kwargs):
        seen["loads"].append((model_key(spec), trainable, seen["phase"]))
        return original(spec, *args, trainable=trainable, **kwargs)

    load_model.original = original
    for module in [m for name, m in sys.modules.items() if name.startswith("prefdistill")]:
        found = getattr(
            module, "load_model", None
        )  # (a module imported under an earlier recorder holds that one)
        if found is not None and getattr(found, "original", found) is original:
            monkeypatch.setattr(module, "load_model", load_model)
    run_chain, check, build = Chain.__call__, entry.check, entry.RunObjects.module

    def chain_call(self, *args, **kwargs):
        seen["phase"] = "pipeline"
        try:
            return run_chain(self, *args, **kwargs)
        finally:
            seen["phase"] = "training"

    def checked(*args, **kwargs):
        seen["plan"] = check(*args, **kwargs)
        return seen["plan"]

    def built(self, *args, **kwargs):
        seen["modules"].append(build(self, *args, **kwargs))
        return seen["modules"][-1]

    from prefdistill.modules import PolicyModule

    configure = PolicyModule.configure_model

    def configure_model(self):
        before, seen["phase"] = seen["phase"], "configure" if seen["phase"] == "training" else seen["phase"]
        try:
            return configure(self)
        finally:
            seen["phase"] = before

    monkeypatch.setattr(PolicyModule, "configure_model", configure_model)
    monkeypatch.setattr(Chain, "__call__", chain_call)
    monkeypatch.setattr(entry, "check", checked)
    monkeypatch.setattr(entry.RunObjects, "module", built)
    return seen


def assert_plan_is_what_ran(seen: dict) -> None:
    """Preflight's plan equals what the run loaded: the training module holds what the planned one said it
    would (role, how, cache); setting the module up loaded exactly the models it holds in training (the policy
    trained, frozen copies); anything it loaded later is a cache pass's model (loaded for one pass, and only when
    that cache is filled after step 0); and the chain loaded exactly the models its planned stages name."""
    plan, (planned, *_, trained) = seen["plan"], seen["modules"]
    describe = lambda held: [(h.role, h.how, h.cache) for h in held]  # noqa: E731
    assert describe(plan.held) == describe(planned.held_models()) == describe(trained.held_models())
    held = trained.held_models()
    at_setup = {(key, trainable) for key, trainable, phase in seen["loads"] if phase == "configure"}
    assert at_setup == {(model_key(h.spec), h.how == "trained") for h in held if h.in_training}, (
        at_setup,
        held,
    )
    later = {(key, trainable) for key, trainable, phase in seen["loads"] if phase == "training"}
    assert later <= {(model_key(h.spec), False) for h in held if h.how == "pass"}, (later, held)
    if not any(stage.trains for stage in plan.pipeline):  # (an SFT'd model loads from the folder it made)
        chain_loads = {key for key, _, phase in seen["loads"] if phase == "pipeline"}
        assert chain_loads == {model_key(spec) for stage in plan.pipeline for _, spec in stage.models}


# -- Lightning callbacks the subprocess tests inject with +callbacks.<name>._target_=train_helpers.<Class>


class KillAtStep(Callback):
    """SIGKILL this process right after optimizer step ``step`` (after ``signals``, if any)."""

    signals: tuple[int, ...] = ()

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            for sig in (*self.signals, signal.SIGKILL):
                os.kill(os.getpid(), sig)


class PreemptAtStep(KillAtStep):
    """Act like SLURM preempting the job: SIGUSR1 (Lightning saves an HPC checkpoint and
    requeues), then SIGKILL."""

    signals = (signal.SIGUSR1,)


class RecordBatches(Callback):
    """Append (global_step, dataset rows) of every train batch to ``path``."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        with open(self.path, "a") as f:
            f.write(json.dumps([trainer.global_step, batch["index"].tolist()]) + "\n")


class RecordRankBatches(Callback):
    """Append ``[rank, global_step, dataset rows]`` of every train batch to ``path``, and ``[rank, pid]`` to
    ``<path>.pids`` when training starts (every rank of a multi-rank run appends to the same files)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_start(self, trainer, module):
        with open(f"{self.path}.pids", "a") as f:
            f.write(json.dumps([trainer.global_rank, os.getpid()]) + "\n")

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        with open(self.path, "a") as f:
            f.write(json.dumps([trainer.global_rank, trainer.global_step, batch["index"].tolist()]) + "\n")


class NonFiniteLossOnRank(Callback):
    """Make rank ``rank``'s loss NaN at the batch starting at ``global_step == step`` (other ranks' stay finite)."""

    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_rank != self.rank or trainer.global_step != self.step:
            return
        compute = type(module).compute

        def nan_once(batch):
            del module.compute  # the class's method again from the next batch on
            loss, metrics = compute(module, batch)
            return loss * float("nan"), metrics

        module.compute = nan_once

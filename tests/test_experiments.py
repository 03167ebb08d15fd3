"""Every configs/experiment/*.yaml composes with the real config, carries its sources' key settings, and
runs end to end (fast_dev_run) once shrunk to tiny models and shipped demo data on CPU.

The shrinking is derived from the composed config (``tiny_overrides``), never from a per-file table, so
an experiment file added later is covered as it is.
"""

from __future__ import annotations

import time

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS, assert_sane_losses, compose_train, offline_private_cache

from prefdistill.train import train

# experiment=<path under configs/experiment/ without .yaml>; files named _* are shared parts, not runs
EXPERIMENTS = sorted(
    p.relative_to(CONFIGS / "experiment").with_suffix("").as_posix()
    for p in (CONFIGS / "experiment").rglob("*.yaml")
    if not p.name.startswith("_")
)

_offline = pytest.fixture(autouse=True)(offline_private_cache)  # every test here

PAD_DATA = {"pipeline.prepare.step.n": 4, "pipeline.prepare.step.k": 5, "pipeline.prepare.step.alpha": 0.0,
            "data.source": "ultrafeedback", "model.name_or_path": "google/gemma-2-2b-it",
            "teacher.name_or_path": "google/gemma-2-9b-it", "module.optimizer.lr": 8.0e-7,
            "data.batch_size": 2, "trainer.accumulate_grad_batches": 32}  # fmt: skip
SIMPER = {"method.name": "simper", "data.source": "ultrafeedback", "data.batch_size": 2,
          "trainer.accumulate_grad_batches": 16, "trainer.max_epochs": 1}  # fmt: skip
GPT2_HH = {"method.name": "dpo", "method.beta": 0.1, "data.source": "hh_rlhf", "module.optimizer.name": "rmsprop",
           "trainer.max_steps": 2400, "data.batch_size": 8, "trainer.accumulate_grad_batches": 8,
           "eval.name": "hh_gpt2_report", "eval.judge.model": "gpt-4o-mini", "eval.data.max_samples": 250,
           "eval.generation.temperature": 0.7, "module.reference": None}  # fmt: skip

# What the sources give, checked where it matters (the run test below covers every file regardless).
EXPECTED = {
    "pad_gemma2_ultrafeedback": {**PAD_DATA, "method.name": "pad_pd", "method.beta": 10.0,
                                 "pipeline.prepare.step.mcq_filter": True, "pipeline.data.record_type": "listwise"},
    "pad_gemma2_ultrafeedback_dpo": {**PAD_DATA, "method.name": "dpo", "pipeline.data.record_type": "pairwise"},
    "pad_gemma2_ultrafeedback_simpo": {**PAD_DATA, "method.name": "simpo", "method.beta": 10.0,
                                       "method.gamma_beta_ratio": 0.3, "pipeline.data.record_type": "pairwise"},
    "simper_mistral_7b_base": {**SIMPER, "model.name_or_path": "alignment-handbook/zephyr-7b-sft-full",
                               "module.optimizer.lr": 3.0e-7, "data.max_length": 1024, "data.max_prompt_length": 512},
    "simper_mistral_7b_instruct": {**SIMPER, "model.name_or_path": "mistralai/Mistral-7B-Instruct-v0.2",
                                   "data.path": "princeton-nlp/mistral-instruct-ultrafeedback",
                                   "module.optimizer.lr": 5.0e-7, "data.max_length": 2048},
    "simper_llama3_8b_base": {**SIMPER, "model.name_or_path": "princeton-nlp/Llama-3-Base-8B-SFT",
                              "module.optimizer.lr": 6.0e-7, "data.max_length": 2048},
    "simper_llama3_8b_instruct": {**SIMPER, "model.name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct",
                                  "data.path": "princeton-nlp/llama3-ultrafeedback",
                                  "module.optimizer.lr": 1.0e-6, "data.max_length": 2048},
    "dpo_gpt2_small_hh": {**GPT2_HH, "model.name_or_path": "openai-community/gpt2", "module.optimizer.lr": 1.0e-5,
                          "pipeline.sft.lr": 5.0e-5, "pipeline.sft.max_steps": 43000, "pipeline.sft.batch_size": 8},
    "dpo_gpt2_medium_hh": {**GPT2_HH, "model.name_or_path": "openai-community/gpt2-medium",
                           "module.optimizer.lr": 3.0e-6, "pipeline.sft.lr": 3.0e-5,
                           "pipeline.sft.max_steps": 43000, "pipeline.sft.batch_size": 8},
    "dpo_gpt2_large_hh": {**GPT2_HH, "model.name_or_path": "openai-community/gpt2-large",
                          "module.optimizer.lr": 1.5e-6, "pipeline.sft.lr": 2.0e-5, "pipeline.sft.max_steps": 5400,
                          "pipeline.sft.batch_size": 64, "data.max_length": 384},
}  # fmt: skip


def _hydra_value(value) -> str:
    """A plain value as Hydra override syntax."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return str(value)


def _resets(prefix: str, wanted: dict, got: dict, skip: set[str] = frozenset()) -> list[str]:
    """``prefix.key=<wanted>`` for every key whose value the experiment file changed."""
    return [f"{prefix}.{k}={_hydra_value(v)}" for k, v in wanted.items() if k not in skip and got.get(k) != v]


def tiny_overrides(tmp_path, name: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Overrides that shrink ``experiment=<name>`` to a seconds-long CPU run, read off its composed config:
    tiny policy (and teacher when it has one), CPU, fast_dev_run, no eval suite; shipped demo data of the
    record type it trains on (a pipeline that makes its data samples the demo prompts), few rows; short
    sampling, the hf backend and one SFT step for pipelines. Values the experiment file sets in ``data``
    and in the hardware's trainer keys are put back to the demo's / the CPU profile's. Each run takes
    a few seconds on one CPU thread."""
    cfg = compose_train(tmp_path, [f"experiment={name}", *extra])
    loss = instantiate(cfg.method)
    pipeline = cfg.get("pipeline") or OmegaConf.create()
    prepare = pipeline.get("prepare") or OmegaConf.create()
    makes_data = bool(pipeline.get("data"))  # else (no pipeline, sft_first) it trains on cfg.data
    if loss.kind == "listwise" and not makes_data:
        data = "demo_lists"
    elif "scores" in loss.needs and not makes_data:
        data = "demo_scored"
    else:
        data = "demo"
    small = {"max_samples": 8, "batch_size": 2, "eval_batch_size": 2}
    out = [
        "model=tiny",
        "hardware=cpu",
        "debug=fdr",
        f"data={data}",
        *(f"data.{k}={v}" for k, v in small.items()),
    ]
    if cfg.get("teacher") or "teacher" in loss.needs:
        out.append("teacher=tiny")
    if cfg.get("eval"):
        out.append("~eval")  # drops the suite the experiment selects (`eval=null` cannot undo an override)
    if prepare.get("sampling"):
        out.append("pipeline.prepare.sampling.max_new_tokens=4")
    if (prepare.get("sampler") or {}).get("backend", "hf") != "hf":
        out.append("pipeline.prepare.sampler.backend=hf")
    step = prepare.get("step") or OmegaConf.create({})
    if step.get("mcq_filter"):
        out.append("pipeline.prepare.step.mcq_filter=false")  # a random tiny teacher splits no list
    if step.get("alpha") == 0:
        # a random tiny teacher gives every MCQ option the floor probability: MCQ-only scores tie, and
        # tied lists make no pair; its log-likelihood breaks the ties
        out.append("pipeline.prepare.step.alpha=0.5")
    if "eval.reward" in str(OmegaConf.to_container(step).get("scorer")):  # the eval suite's reward model, dropped above
        out.append("pipeline.prepare.step.scorer=teacher_likelihood")
    if "${pipeline.sft" in str(OmegaConf.to_container(prepare)):  # an SFT recipe is used
        out += ["pipeline.sft.max_steps=1", "pipeline.sft.batch_size=2"]
        for role in ("sft_student", "sft_teacher"):  # a recipe an experiment sets apart from pipeline.sft
            out += [f"pipeline.{role}.max_steps=1", f"pipeline.{role}.batch_size=2"]
    base = compose_train(tmp_path, [f"data={data}", "hardware=cpu"])
    shrunk = compose_train(tmp_path, [f"experiment={name}", *extra, *out])
    out += _resets("data", OmegaConf.to_container(base.data), OmegaConf.to_container(shrunk.data), set(small))
    hardware_keys = OmegaConf.load(CONFIGS / "hardware" / "cpu.yaml").trainer
    cpu = {k: base.trainer[k] for k in hardware_keys}
    out += _resets("trainer", cpu, OmegaConf.to_container(shrunk.trainer))
    return out


def _get(cfg, dotted: str):
    return OmegaConf.select(cfg, dotted, throw_on_missing=True)


def test_expectations_name_existing_files():
    assert set(EXPECTED) <= set(EXPERIMENTS), set(EXPECTED) - set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_its_sources_settings(name, tmp_path):
    text = (CONFIGS / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n"), name
    assert f"python train.py experiment={name}" in text, "the header names the exact command"
    cfg = compose_train(tmp_path, [f"experiment={name}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert cfg.task_name != "train" and cfg.tags, "an experiment names its task (its logs/<task>/ folder)"
    loss = instantiate(cfg.method)
    instantiate(cfg.model)
    if cfg.get("teacher"):
        instantiate(cfg.teacher)
    chain = instantiate(cfg.pipeline.prepare) if cfg.get("pipeline") else None  # builds, runs nothing
    if "teacher" in loss.needs or (chain is not None and chain.needs_teacher):
        assert cfg.get("teacher"), f"{name}: its method or pipeline needs a teacher"
    optimizer = instantiate(cfg.module.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert optimizer.param_groups[0]["lr"] == cfg.module.optimizer.lr
    if cfg.module.optimizer.get("name") == "rmsprop":
        assert type(optimizer) is torch.optim.RMSprop
    for key, value in EXPECTED.get(name, {}).items():
        assert _get(cfg, key) == value, f"{name}: {key} = {_get(cfg, key)!r}, expected {value!r}"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_runs_shrunk_to_tiny(name, tmp_path):
    overrides = tiny_overrides(tmp_path, name)
    cfg = compose_train(tmp_path, [f"experiment={name}", *overrides])
    started = time.time()
    metrics = train(cfg)
    took = time.time() - started
    assert_sane_losses(metrics, cfg.paths.output_dir)
    assert took < 60, f"{name} took {took:.0f} s under {overrides}"


ROWS = sorted(p.stem for p in (CONFIGS / "row").glob("*.yaml"))


@pytest.mark.parametrize("row", ROWS)
def test_every_table_row_runs_in_a_table_experiment(row, tmp_path):
    """Rows (configs/row/) swap the method and its pipeline; each runs shrunk inside distill_study."""
    overrides = [f"row={row}", *tiny_overrides(tmp_path, "distill_study", (f"row={row}",))]
    cfg = compose_train(tmp_path, ["experiment=distill_study", *overrides])
    assert_sane_losses(train(cfg), cfg.paths.output_dir)

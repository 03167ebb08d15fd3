"""Registry contract for the pairwise/reference-free losses, and their configs/method/*.yaml."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prefdistill.losses import REGISTRY, Loss, get_loss, list_losses, resolve_name

TRL_FAMILY = ["exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down",
              "discopop", "sigmoid_norm"]  # fmt: skip
NAMES = ["dpo", "robust", "ipo", "hinge", "rpo", "simpo", "simper", "sft", "orpo", "cpo", "mixture", *TRL_FAMILY]
REF = frozenset({"reference", "rejected"})
NEEDS = {
    "dpo": REF,
    "robust": REF,
    "ipo": REF,
    "hinge": REF,
    "rpo": REF,
    "simpo": frozenset({"rejected"}),
    "simper": frozenset({"rejected"}),
    "sft": frozenset(),
    "orpo": frozenset({"rejected"}),
    "cpo": frozenset({"rejected"}),
    "mixture": REF,  # its default parts, dpo and sft
    **{n: REF for n in TRL_FAMILY},
}
# TRL DPOConfig.loss_type -> our registered loss (a TRL user finds every one under its TRL name)
TRL_LOSS_TYPES = {"sigmoid": "dpo", "hinge": "hinge", "ipo": "ipo", "exo_pair": "exo_pair", "nca_pair": "nca_pair",
                  "robust": "robust", "bco_pair": "bco_pair", "sppo_hard": "sppo_hard", "aot": "aot",
                  "aot_unpaired": "aot_unpaired", "apo_zero": "apo_zero", "apo_down": "apo_down",
                  "discopop": "discopop", "sft": "sft", "sigmoid_norm": "sigmoid_norm"}  # fmt: skip
# configs/method/<stem>.yaml -> registered name
CONFIGS = {n: n for n in NAMES} | {"cdpo": "dpo"}
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "method"
TENSOR_ARGS = [
    "chosen_logps",
    "rejected_logps",
    "chosen_lengths",
    "rejected_lengths",
    "ref_chosen_logps",
    "ref_rejected_logps",
]


def batch(b=3, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    t = {
        "chosen_logps": (-torch.rand(b, generator=g) * 20 - 1).to(dtype),
        "rejected_logps": (-torch.rand(b, generator=g) * 20 - 1).to(dtype),
        "chosen_lengths": torch.randint(1, 20, (b,), generator=g),
        "rejected_lengths": torch.randint(1, 20, (b,), generator=g),
        "ref_chosen_logps": (-torch.rand(b, generator=g) * 20 - 1).to(dtype),
        "ref_rejected_logps": (-torch.rand(b, generator=g) * 20 - 1).to(dtype),
    }
    if grad:
        t["chosen_logps"].requires_grad_(True)
        t["rejected_logps"].requires_grad_(True)
    return t


def test_list_losses_contains_all():
    assert set(NAMES) <= set(list_losses())
    assert list_losses() == sorted(list_losses())


@pytest.mark.parametrize("name", NAMES)
def test_needs_kind_and_signature(name):
    loss = get_loss(name)
    assert loss.needs == NEEDS[name]
    assert loss.kind == "pairwise"
    # the public call's six tensors are the first fields of the kind's one input type
    assert [f.name for f in dataclasses.fields(loss.inputs)][:6] == TENSOR_ARGS
    # the function takes that input and its declared hyper-parameters, keyword-only, and nothing else
    params = list(inspect.signature(REGISTRY[name].fn).parameters.values())
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    named = [p for p in params[1:] if p.kind is not inspect.Parameter.VAR_KEYWORD]  # a mixture's shared **hparams
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in named)
    takes = {p.name for p in named} - ({"state"} if REGISTRY[name].state else set())
    assert set(loss.hparams) == takes == set(REGISTRY[name].hparams)


@pytest.mark.parametrize(("trl_name", "ours"), sorted(TRL_LOSS_TYPES.items()))
def test_every_trl_dpo_loss_type_resolves_under_its_trl_name(trl_name, ours):
    assert get_loss(trl_name).name == ours


def test_dpo_reference_free_needs_only_rejected():
    assert get_loss("dpo", reference_free=True).needs == frozenset({"rejected"})
    assert get_loss("dpo", reference_free=False).needs == REF


def test_unknown_name_lists_registered():
    with pytest.raises(KeyError) as e:
        get_loss("dpoo")
    for n in NAMES:
        assert n in str(e.value)


def test_unknown_hparam_is_type_error():
    with pytest.raises(TypeError, match="gamma"):
        get_loss("dpo", gamma=1.0)
    with pytest.raises(TypeError):
        get_loss("sft", beta=0.1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_outputs_shape_dtype_detached(name, dtype):
    t = batch(4, dtype=dtype, grad=True)
    out = get_loss(name)(**t)
    assert out.loss.shape == (4,) and out.loss.dtype == torch.float32
    assert out.loss.requires_grad
    assert torch.isfinite(out.loss).all()
    assert "reward/chosen" in out.metrics
    for k, v in out.metrics.items():
        assert v.shape == (4,), k
        assert v.dtype == torch.float32, k
        assert not v.requires_grad, k
    if name != "sft":
        assert {"reward/chosen", "reward/rejected", "reward/margin", "reward/accuracy"} <= set(out.metrics)
        m = out.metrics
        assert torch.allclose(m["reward/margin"], m["reward/chosen"] - m["reward/rejected"])
        assert torch.equal(m["reward/accuracy"], (m["reward/chosen"] > m["reward/rejected"]).float())


@pytest.mark.parametrize("name", [n for n in NAMES if "reference" in NEEDS[n] and n != "mixture"])  # (names its part)
@pytest.mark.parametrize("missing", ["ref_chosen_logps", "ref_rejected_logps"])
def test_missing_reference_raises(name, missing):
    t = batch()
    t[missing] = None
    with pytest.raises(ValueError, match=f"(?s){name}.*{missing}"):
        get_loss(name)(**t)


def test_bad_shape_raises():
    t = batch()
    t["chosen_logps"] = t["chosen_logps"][:, None]
    with pytest.raises(ValueError, match="shape"):
        get_loss("dpo")(**t)


@pytest.mark.parametrize("stem", sorted(CONFIGS))
def test_method_config_instantiates_and_runs(stem):
    cfg = OmegaConf.load(CONFIG_DIR / f"{stem}.yaml")
    loss = instantiate(cfg)
    assert isinstance(loss, Loss)
    assert loss.name == CONFIGS[stem]
    t = batch(3)
    if "reference" not in loss.needs:
        t["ref_chosen_logps"] = t["ref_rejected_logps"] = None
    if "rejected" not in loss.needs:
        t["rejected_logps"] = t["rejected_lengths"] = None
    out = loss(**t)
    assert out.loss.shape == (3,) and torch.isfinite(out.loss).all()


def test_cdpo_config_is_smoothed_dpo():
    loss = instantiate(OmegaConf.load(CONFIG_DIR / "cdpo.yaml"))
    assert loss.name == "dpo" and loss.hparams["label_smoothing"] == 0.1


def _method_files() -> dict:
    """configs/method/<stem>.yaml files that build a loss themselves (a ``name`` key), as plain dicts."""
    files = {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in sorted(CONFIG_DIR.glob("*.yaml"))}
    return {stem: node for stem, node in files.items() if "name" in node}


def test_every_registered_loss_file_spells_out_exactly_the_registered_defaults():
    """One source for defaults: ``register(..., hparams=...)``. Every registered loss has
    ``configs/method/<name>.yaml`` and it writes every hyper-parameter with exactly that default (so
    ``method.<key>=...`` works and the file cannot drift from the registry); a file under another name is a
    variant (``cdpo``: DPO with label smoothing) that may change values but adds no key the loss does not take.
    The mixture also sets the hyper-parameters it shares with its parts (``beta``)."""
    files = _method_files()
    for name, spec in sorted(REGISTRY.items()):
        assert name in files, f"{name}: no configs/method/{name}.yaml"
        declared = {k: v for k, v in files[name].items() if k not in ("_target_", "name", "defaults")}
        assert resolve_name(files[name]["name"]) == name
        if spec.open_hparams:
            declared = {k: v for k, v in declared.items() if k in spec.defaults}
        assert declared == spec.defaults, f"configs/method/{name}.yaml differs from register({name!r}, hparams=...)"
    for stem, node in files.items():
        spec = REGISTRY[resolve_name(node["name"])]
        extra = set(node) - {"_target_", "name", "defaults"} - set(spec.defaults)
        assert spec.open_hparams or not extra, f"configs/method/{stem}.yaml sets {sorted(extra)}, not hyper-parameters of {spec.name}"

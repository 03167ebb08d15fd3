"""PreferenceModule on the tiny model: reference handling, cache equivalence, every pairwise loss learns."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

from prefdistill.data import PreferenceDataModule
from prefdistill.losses import REGISTRY, get_loss
from prefdistill.models import load_tokenizer
from prefdistill.modules import PreferenceModule, build_module

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
TINY_LORA = instantiate(
    OmegaConf.load(CONFIGS / "model" / "tiny.yaml"),
    lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
)
PAIRWISE = sorted(n for n, e in REGISTRY.items() if e.kind == "pairwise")


@pytest.fixture(scope="module")
def batch():
    dm = PreferenceDataModule(
        source="shipped", max_samples=4, batch_size=4, max_length=96, max_prompt_length=64
    )
    dm.connect(load_tokenizer(TINY))
    dm.setup("fit")
    return next(iter(dm.train_dataloader()))


def _scored(batch):
    n = batch["chosen_input_ids"].shape[0]
    return {**batch, "chosen_scores": torch.ones(n), "rejected_scores": torch.zeros(n)}


@pytest.mark.parametrize("name", PAIRWISE)
def test_every_pairwise_loss_updates_every_trainable_param(tiny_module, name, batch):
    loss = get_loss(name)
    module = tiny_module(policy=TINY, lr=1.0, loss=loss)
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    value, metrics = module.compute(_scored(batch))
    assert torch.isfinite(value)
    value.backward()
    torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=1.0).step()
    changed = [n for n, p in module.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    # every parameter that carries gradient moves (tied embeddings included)
    assert len(changed) >= 0.9 * len(before), (name, len(changed), len(before))
    assert "logps/chosen" in metrics
    # the per-token likelihood is the sequence log-prob over its response tokens
    lengths = batch["chosen_labels"].ne(-100).sum(-1)
    torch.testing.assert_close(metrics["logps/chosen_per_token"], metrics["logps/chosen"] / lengths)


def test_reference_is_a_frozen_copy_for_full_finetuning_and_absent_for_reference_free(tiny_module, batch):
    dpo = tiny_module(policy=TINY, lr=1.0, loss=get_loss("dpo"))
    assert dpo.reference is not None
    assert not any(p.requires_grad for p in dpo.reference.parameters())
    simpo = tiny_module(policy=TINY, lr=1.0, loss=get_loss("simpo"))
    assert simpo.reference is None
    free = tiny_module(policy=TINY, lr=1.0, loss=get_loss("dpo", reference_free=True))
    assert free.reference is None


def test_lora_reference_is_the_policy_with_adapters_disabled(tiny_module, batch):
    module = tiny_module(policy=TINY_LORA, lr=1.0, loss=get_loss("dpo"))
    assert module.reference is None  # no second copy
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    # perturb the adapters: the policy moves, the reference must not
    ref_before = module.reference_logps(batch, ("chosen", "rejected"))
    with torch.no_grad():
        for n, p in module.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)
    ref_after = module.reference_logps(batch, ("chosen", "rejected"))
    policy, _ = module.sequence_logps(module.policy, batch, ("chosen", "rejected"))
    torch.testing.assert_close(ref_before, ref_after)
    assert not torch.allclose(policy, ref_after)


def test_loss_at_initialisation_is_log2_for_dpo(tiny_module, batch):
    module = tiny_module(policy=TINY_LORA, lr=1.0, loss=get_loss("dpo"))
    value, metrics = module.compute(batch)
    assert value.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)
    assert metrics["reward/margin"].abs().max() < 1e-6


def test_sft_forwards_only_the_chosen_side(tiny_module, batch, monkeypatch):
    module = tiny_module(policy=TINY, lr=1.0, loss=get_loss("sft"))
    seen = []
    original = module.sequence_logps
    monkeypatch.setattr(
        module, "sequence_logps", lambda m, b, sides: seen.append(sides) or original(m, b, sides)
    )
    module.compute(batch)
    assert seen == [("chosen",)]


def test_missing_scores_fail_loudly(tiny_module, batch):
    module = tiny_module(policy=TINY, lr=1.0, loss=get_loss("plad_margin"))
    with pytest.raises(KeyError):
        module.compute(batch)


def test_build_module_picks_the_module_by_loss_kind():
    from prefdistill.modules import DistillModule, ListwiseModule

    opt = partial(torch.optim.SGD, lr=0.1)
    assert type(build_module(loss=get_loss("dpo"), policy=TINY, optimizer=opt)) is PreferenceModule
    assert (
        type(build_module(loss=get_loss("kd_fkl"), policy=TINY, optimizer=opt, teacher=TINY)) is DistillModule
    )
    assert type(build_module(loss=get_loss("pad_pd"), policy=TINY, optimizer=opt)) is ListwiseModule
    with pytest.raises(ValueError, match="needs a teacher"):
        build_module(loss=get_loss("kd_fkl"), policy=TINY, optimizer=opt)


def test_every_module_names_its_kind_and_refuses_another():
    """One guard (``PolicyModule.kind``) for every module: built directly with another kind's loss, it says so."""
    from prefdistill.modules import MODULES_BY_KIND

    assert set(MODULES_BY_KIND) == {spec.kind for spec in REGISTRY.values()}
    opt = partial(torch.optim.SGD, lr=0.1)
    for kind, cls in MODULES_BY_KIND.items():
        other = next(name for name, spec in sorted(REGISTRY.items()) if spec.kind != kind)
        with pytest.raises(ValueError, match=rf"{cls.__name__} trains {kind} losses; '{other}' is a"):
            cls(policy=TINY, loss=get_loss(other), optimizer=opt)


def test_build_module_passes_each_module_its_keys_and_rejects_typos():
    opt = partial(torch.optim.SGD, lr=0.1)
    common = {"policy": TINY, "optimizer": opt, "forward": "padded", "reference_cache": None}
    assert build_module(loss=get_loss("dpo"), **common).forward_mode == "padded"
    # unset (null / auto) settings of another kind's module are fine
    build_module(
        loss=get_loss("kd_fkl"), teacher=TINY, policy=TINY, optimizer=opt, forward="auto", reference=None
    )
    with pytest.raises(TypeError, match="forwrd"):
        build_module(loss=get_loss("dpo"), forwrd="padded", policy=TINY, optimizer=opt)


SETTINGS_OF_ANOTHER_KIND = {  # loss -> a setting that its module does not use, and the kinds that do
    "dpo": ("teacher_topk", 32, "token"),
    "simpo": ("on_policy", "x", "token"),
    "kd_fkl": ("forward", "padded", "pairwise"),
    "kd_rkl": ("reference_cache", "/x", "pairwise"),
    "pad_pd": ("teacher_cache", "/x", "token"),
    "pad_rd": ("reference", TINY, "pairwise"),
}


@pytest.mark.parametrize("name", sorted(SETTINGS_OF_ANOTHER_KIND))
def test_a_setting_the_loss_kind_does_not_use_is_an_error_naming_key_and_kind(name):
    key, value, owner = SETTINGS_OF_ANOTHER_KIND[name]
    loss = get_loss(name)
    models = {"teacher": TINY} if "teacher" in loss.needs else {}
    with pytest.raises(ValueError, match=rf"(?s)module\.{key}.*{owner}.*{loss.kind} loss"):
        build_module(
            loss=loss, policy=TINY, optimizer=partial(torch.optim.SGD, lr=0.1), **models, **{key: value}
        )

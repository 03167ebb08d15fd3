"""PreferenceModule with TRL's per-token options (LD-DPO, WPO), TR-DPO's reference sync and a stateful loss.

* per-token log-probs come from the same shared-prompt (or padded) forward as the sums, and agree with full
  logits, including WPO's ``log Σ_v p_v²``; they are only computed when the loss declares them;
* ``module.sync_reference`` moves the reference towards the policy, refuses setups without a reference copy,
  and the moved reference is saved in checkpoints;
* a stateful loss's running state (BCO's reward mean) advances with training steps and survives a checkpoint.
"""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

from prefdistill.data import PreferenceDataModule
from prefdistill.losses import get_loss
from prefdistill.models import load_tokenizer
from prefdistill.modules import PreferenceModule

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
TINY_LORA = instantiate(
    OmegaConf.load(CONFIGS / "model" / "tiny.yaml"),
    lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
)
SIDES = ("chosen", "rejected")


def _datamodule(batch_size=4, max_samples=8):
    dm = PreferenceDataModule(
        source="shipped", max_samples=max_samples, batch_size=batch_size, max_length=96, max_prompt_length=64
    )
    dm.connect(load_tokenizer(TINY))
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def batch():
    return next(iter(_datamodule().train_dataloader()))


def _module(loss, spec=TINY, **kw):
    kw.setdefault("reference_cache", None)
    module = PreferenceModule(policy=spec, loss=loss, optimizer=partial(torch.optim.SGD, lr=0.5), **kw)
    module.configure_model()
    return module


def _full_logits_tokens(model, batch, side):
    """(log p of every response token, log Σ_v p_v² there) per row, from the full logits (the plain way)."""
    logits = model(input_ids=batch[f"{side}_input_ids"], attention_mask=batch[f"{side}_attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    labels = batch[f"{side}_labels"][:, 1:]
    rows = []
    for b in range(labels.shape[0]):
        keep = labels[b] != -100
        picked = logp[b][keep].gather(-1, labels[b][keep][:, None]).squeeze(-1)
        rows.append((picked, torch.logsumexp(2 * logp[b][keep], -1)))
    return rows


@pytest.mark.parametrize("forward", ["shared_prompt", "padded"])
def test_per_token_logps_and_sq_match_full_logits_and_sum_to_the_sequence_logps(batch, forward):
    module = _module(get_loss("dpo"), forward=forward)
    with torch.no_grad():
        flat = module.token_logps(module.policy, batch, SIDES, with_sq=True)
        sums, counts = module.sequence_logps(module.policy, batch, SIDES)
        values, mask, sq = flat.padded()
        n = batch["chosen_input_ids"].shape[0]
        for i, side in enumerate(SIDES):
            for b, (logp, want_sq) in enumerate(_full_logits_tokens(module.policy, batch, side)):
                row = i * n + b
                torch.testing.assert_close(values[row][mask[row]], logp, atol=1e-5, rtol=1e-5)
                torch.testing.assert_close(sq[row][mask[row]], want_sq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flat.sums(), sums, atol=1e-4, rtol=1e-5)
    assert torch.equal(flat.counts(), counts)


def test_ld_alpha_one_is_dpo_and_the_default_path_computes_no_tokens(batch, monkeypatch):
    plain = _module(get_loss("dpo", beta=0.5))
    calls = []
    monkeypatch.setattr(plain, "token_logps", lambda *a, **k: calls.append(a) or None)
    with torch.no_grad():
        plain.policy.lm_head.weight.mul_(1.1)  # policy != reference
    loss_plain, _ = plain.compute(batch)
    assert calls == []  # no per-token pass on the default path
    ld = _module(get_loss("dpo", beta=0.5, ld_alpha=1.0))
    ld.policy.load_state_dict(plain.policy.state_dict())
    loss_ld, _ = ld.compute(batch)
    torch.testing.assert_close(loss_ld, loss_plain, atol=1e-5, rtol=1e-5)
    loss_half, _ = _module(get_loss("dpo", beta=0.5, ld_alpha=0.0)).compute(batch)
    assert torch.isfinite(loss_half)


def test_wpo_weights_reach_the_loss_and_gradients_flow(batch):
    module = _module(get_loss("mixture", losses=["dpo", "sft"], use_weighting=True))
    value, metrics = module.compute(batch)
    weights = metrics["wpo/weight"]
    assert weights.shape == (batch["chosen_input_ids"].shape[0],) and (weights > 0).all()
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.policy.parameters())


def test_per_token_reference_needs_no_cache_auto_drops_it_an_explicit_folder_is_an_error(tmp_path):
    ld = get_loss("dpo", ld_alpha=0.5)
    assert _module(ld, reference_cache="auto", cache_dir=str(tmp_path)).reference_cache is None
    with pytest.raises(ValueError, match="(?s)reference_cache.*per-token reference"):
        _module(ld, reference_cache=str(tmp_path / "ref"))
    wpo = _module(get_loss("dpo", use_weighting=True), reference_cache="auto", cache_dir=str(tmp_path))
    assert wpo.reference_cache is not None  # WPO needs the policy's tokens only: the sums stay cached


# ---------------------------------------------------------------- TR-DPO
def test_sync_reference_mixes_parameters_and_refuses_what_cannot_be_synced(tmp_path):
    module = _module(get_loss("dpo"), sync_reference={"every_steps": 3, "alpha": 0.25})
    assert module.sync_reference == {"every_steps": 3, "alpha": 0.25}
    before = [p.detach().clone() for p in module.reference.parameters()]
    with torch.no_grad():
        for p in module.policy.parameters():
            p.add_(1.0)
    module.sync_reference_now()
    for ref, old, pol in zip(module.reference.parameters(), before, module.policy.parameters(), strict=True):
        torch.testing.assert_close(ref, 0.75 * old + 0.25 * pol)
    assert _module(get_loss("dpo"), sync_reference={}).sync_reference == {"every_steps": 512, "alpha": 0.6}
    with pytest.raises(ValueError, match="LoRA"):
        _module(get_loss("dpo"), spec=TINY_LORA, sync_reference={})
    with pytest.raises(ValueError, match="(?s)reference_cache.*sync_reference"):
        _module(get_loss("dpo"), sync_reference={}, reference_cache=str(tmp_path))
    assert _module(get_loss("dpo"), sync_reference={}, reference_cache="auto", cache_dir=str(tmp_path)).reference_cache is None
    with pytest.raises(ValueError, match="no reference"):
        _module(get_loss("simpo"), sync_reference={})
    with pytest.raises(ValueError, match="every_steps"):
        _module(get_loss("dpo"), sync_reference={"every_steps": 0})


def _fit(module, steps, dm=None):
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm or _datamodule(batch_size=2))
    return trainer


def test_synced_reference_moves_every_k_steps_and_is_checkpointed(tmp_path):
    module = _module(get_loss("dpo"), sync_reference={"every_steps": 2, "alpha": 0.5})
    initial = [p.detach().clone() for p in module.reference.parameters()]
    trainer = _fit(module, steps=1)
    assert all(torch.equal(a, b) for a, b in zip(initial, module.reference.parameters()))  # step 1: no sync yet
    module = _module(get_loss("dpo"), sync_reference={"every_steps": 2, "alpha": 0.5})
    trainer = _fit(module, steps=2)
    moved = [p.detach().clone() for p in module.reference.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(initial, moved))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("reference.") for k in ckpt["state_dict"])
    fresh = _module(get_loss("dpo"), sync_reference={"every_steps": 2, "alpha": 0.5})
    fresh.load_state_dict(ckpt["state_dict"], strict=False)
    fresh.on_load_checkpoint(ckpt)
    assert all(torch.equal(a, b) for a, b in zip(moved, fresh.reference.parameters()))
    assert fresh._last_sync_step == 2


# ---------------------------------------------------------------- a stateful loss in the module
@pytest.mark.parametrize("loss", [{"name": "bco_pair"}, {"name": "mixture", "losses": ["bco_pair", "sft"]}])
def test_bco_running_mean_advances_per_step_and_survives_a_checkpoint(tmp_path, loss):
    loss = get_loss(**loss, running_mean=True)
    module = _module(loss)
    trainer = _fit(module, steps=3)
    count = next(v for k, v in module.loss_state.items() if k.endswith("reward_count"))
    assert count.item() == 3.0
    mean = {k: v.clone() for k, v in module.loss_state.items()}
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    fresh = _module(loss)
    assert all(v.item() == 0.0 for v in fresh.loss_state.values())
    fresh.on_load_checkpoint(ckpt)
    assert fresh.loss_state.keys() == mean.keys()
    assert all(torch.equal(fresh.loss_state[k], mean[k]) for k in mean)
    # validation reads the state without moving it
    fresh.eval()
    with torch.no_grad():
        fresh.compute(next(iter(_datamodule().train_dataloader())))
    assert all(torch.equal(fresh.loss_state[k], mean[k]) for k in mean)

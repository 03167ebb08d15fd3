"""PreferenceModule with TRL's per-token options (LD-DPO, WPO), TR-DPO's reference sync and a stateful loss.

* per-token log-probs come from the same shared-prompt (or padded) forward as the sums, and agree with full
  logits, including WPO's ``log Σ_v p_v²``; they are only computed when the loss declares them;
* ``module.sync_reference`` moves the reference towards the policy, refuses setups without a reference copy,
  and the moved reference is saved in checkpoints;
* a stateful loss's running state (BCO's reward mean) advances with training steps and survives a checkpoint.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

from prefdistill.losses import get_loss

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
TINY_LORA = instantiate(
    OmegaConf.load(CONFIGS / "model" / "tiny.yaml"),
    lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
)
SIDES = ("chosen", "rejected")


@pytest.fixture(scope="module")
def batch(tiny_data):
    return next(iter(tiny_data().train_dataloader()))


def _full_logits_tokens(model, batch, side):
    """(log p of every response token, log Σ_v p_v² there) per row, from the full logits (the plain way)."""
    logits = model(
        input_ids=batch[f"{side}_input_ids"], attention_mask=batch[f"{side}_attention_mask"]
    ).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    labels = batch[f"{side}_labels"][:, 1:]
    rows = []
    for b in range(labels.shape[0]):
        keep = labels[b] != -100
        picked = logp[b][keep].gather(-1, labels[b][keep][:, None]).squeeze(-1)
        rows.append((picked, torch.logsumexp(2 * logp[b][keep], -1)))
    return rows


@pytest.mark.parametrize("forward", ["shared_prompt", "padded"])
def test_per_token_logps_and_sq_match_full_logits_and_sum_to_the_sequence_logps(tiny_module, batch, forward):
    module = tiny_module(get_loss("dpo"), lr=0.5, reference_cache=None, forward=forward)
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


def test_ld_alpha_one_is_dpo_and_the_default_path_computes_no_tokens(tiny_module, batch, monkeypatch):
    plain = tiny_module(get_loss("dpo", beta=0.5), lr=0.5, reference_cache=None)
    calls = []
    monkeypatch.setattr(plain, "token_logps", lambda *a, **k: calls.append(a) or None)
    with torch.no_grad():
        plain.policy.lm_head.weight.mul_(1.1)  # policy != reference
    loss_plain, _ = plain.compute(batch)
    assert calls == []  # no per-token pass on the default path
    ld = tiny_module(get_loss("dpo", beta=0.5, ld_alpha=1.0), lr=0.5, reference_cache=None)
    ld.policy.load_state_dict(plain.policy.state_dict())
    loss_ld, _ = ld.compute(batch)
    torch.testing.assert_close(loss_ld, loss_plain, atol=1e-5, rtol=1e-5)
    loss_half, _ = tiny_module(get_loss("dpo", beta=0.5, ld_alpha=0.0), lr=0.5, reference_cache=None).compute(
        batch
    )
    assert torch.isfinite(loss_half)


def test_wpo_weights_reach_the_loss_and_gradients_flow(tiny_module, batch):
    module = tiny_module(
        get_loss("mixture", losses=["dpo", "sft"], use_weighting=True), lr=0.5, reference_cache=None
    )
    value, metrics = module.compute(batch)
    weights = metrics["wpo/weight"]
    assert weights.shape == (batch["chosen_input_ids"].shape[0],) and (weights > 0).all()
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.policy.parameters())


def test_per_token_reference_needs_no_cache_auto_drops_it_an_explicit_folder_is_an_error(
    tiny_module, tmp_path
):
    ld = get_loss("dpo", ld_alpha=0.5)
    assert tiny_module(ld, lr=0.5, reference_cache="auto", cache_dir=str(tmp_path)).reference_cache is None
    with pytest.raises(ValueError, match="(?s)reference_cache.*per-token reference"):
        tiny_module(ld, lr=0.5, reference_cache=str(tmp_path / "ref"))
    wpo = tiny_module(
        get_loss("dpo", use_weighting=True), lr=0.5, reference_cache="auto", cache_dir=str(tmp_path)
    )
    assert wpo.reference_cache is not None  # WPO needs the policy's tokens only: the sums stay cached


# ---------------------------------------------------------------- TR-DPO
def test_sync_reference_mixes_parameters_and_refuses_what_cannot_be_synced(tiny_module, tmp_path):
    module = tiny_module(
        get_loss("dpo"), lr=0.5, reference_cache=None, sync_reference={"every_steps": 3, "alpha": 0.25}
    )
    assert module.sync_reference == {"every_steps": 3, "alpha": 0.25}
    before = [p.detach().clone() for p in module.reference.parameters()]
    with torch.no_grad():
        for p in module.policy.parameters():
            p.add_(1.0)
    module.sync_reference_now()
    for ref, old, pol in zip(module.reference.parameters(), before, module.policy.parameters(), strict=True):
        torch.testing.assert_close(ref, 0.75 * old + 0.25 * pol)
    assert tiny_module(get_loss("dpo"), lr=0.5, reference_cache=None, sync_reference={}).sync_reference == {
        "every_steps": 512,
        "alpha": 0.6,
    }
    with pytest.raises(ValueError, match="LoRA"):
        tiny_module(get_loss("dpo"), lr=0.5, reference_cache=None, policy=TINY_LORA, sync_reference={})
    with pytest.raises(ValueError, match="(?s)reference_cache.*sync_reference"):
        tiny_module(get_loss("dpo"), lr=0.5, sync_reference={}, reference_cache=str(tmp_path))
    assert (
        tiny_module(
            get_loss("dpo"), lr=0.5, sync_reference={}, reference_cache="auto", cache_dir=str(tmp_path)
        ).reference_cache
        is None
    )
    with pytest.raises(ValueError, match="no reference"):
        tiny_module(get_loss("simpo"), lr=0.5, reference_cache=None, sync_reference={})
    with pytest.raises(ValueError, match="every_steps"):
        tiny_module(get_loss("dpo"), lr=0.5, reference_cache=None, sync_reference={"every_steps": 0})


def test_synced_reference_moves_every_k_steps_and_is_checkpointed(tiny_data, tiny_module, fit, tmp_path):
    module = tiny_module(
        get_loss("dpo"), lr=0.5, reference_cache=None, sync_reference={"every_steps": 2, "alpha": 0.5}
    )
    initial = [p.detach().clone() for p in module.reference.parameters()]
    trainer = fit(module, tiny_data(batch_size=2), steps=1)
    assert all(
        torch.equal(a, b) for a, b in zip(initial, module.reference.parameters())
    )  # step 1: no sync yet
    module = tiny_module(
        get_loss("dpo"), lr=0.5, reference_cache=None, sync_reference={"every_steps": 2, "alpha": 0.5}
    )
    trainer = fit(module, tiny_data(batch_size=2), steps=2)
    moved = [p.detach().clone() for p in module.reference.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(initial, moved))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("reference.") for k in ckpt["state_dict"])
    fresh = tiny_module(
        get_loss("dpo"), lr=0.5, reference_cache=None, sync_reference={"every_steps": 2, "alpha": 0.5}
    )
    fresh.load_state_dict(ckpt["state_dict"], strict=False)
    fresh.on_load_checkpoint(ckpt)
    assert all(torch.equal(a, b) for a, b in zip(moved, fresh.reference.parameters()))
    assert fresh._last_sync_step == 2


# ---------------------------------------------------------------- a stateful loss in the module
@pytest.mark.parametrize("loss", [{"name": "bco_pair"}, {"name": "mixture", "losses": ["bco_pair", "sft"]}])
def test_bco_running_mean_advances_per_step_and_survives_a_checkpoint(
    tiny_data, tiny_module, fit, tmp_path, loss
):
    loss = get_loss(**loss, running_mean=True)
    module = tiny_module(loss, lr=0.5, reference_cache=None)
    trainer = fit(module, tiny_data(batch_size=2), steps=3)
    count = next(v for k, v in module.loss_state.items() if k.endswith("reward_count"))
    assert count.item() == 3.0
    mean = {k: v.clone() for k, v in module.loss_state.items()}
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    fresh = tiny_module(loss, lr=0.5, reference_cache=None)
    assert all(v.item() == 0.0 for v in fresh.loss_state.values())
    fresh.on_load_checkpoint(ckpt)
    assert fresh.loss_state.keys() == mean.keys()
    assert all(torch.equal(fresh.loss_state[k], mean[k]) for k in mean)
    # validation reads the state without moving it
    fresh.eval()
    with torch.no_grad():
        fresh.compute(next(iter(tiny_data().train_dataloader())))
    assert all(torch.equal(fresh.loss_state[k], mean[k]) for k in mean)

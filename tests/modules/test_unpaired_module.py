"""UnpairedModule on the tiny model: packed = padded = each row alone, the KL rows are the mismatched pairs,
the reference cache equals the online reference, metrics split by label and pair, BCO's state, KTO learns."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS, perturb_lora

from prefdistill.losses import get_loss
from prefdistill.models import response_logps
from prefdistill.modules import RewardModule, UnpairedModule, build_module
from prefdistill.modules.unpaired import pair_metrics

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
UNPAIRED = {"unpair": True, "max_samples": 6, "eval_batch_size": 4}  # 6 pairs cut into 12 labelled rows
TINY_LORA = instantiate(
    OmegaConf.load(CONFIGS / "model" / "tiny.yaml"),
    lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
)


@pytest.fixture(scope="module")
def dm(tiny_data):
    return tiny_data(**UNPAIRED)


@pytest.fixture(scope="module")
def batch(dm):
    return next(iter(dm.train_dataloader()))


def test_build_module_picks_the_kind_s_module_and_rejects_other_kinds_settings():
    opt = partial(torch.optim.SGD, lr=0.1)
    assert isinstance(build_module(loss=get_loss("kto"), policy=TINY, optimizer=opt), UnpairedModule)
    assert isinstance(build_module(loss=get_loss("bco"), policy=TINY, optimizer=opt), UnpairedModule)
    assert isinstance(build_module(loss=get_loss("reward"), policy=TINY, optimizer=opt), RewardModule)
    with pytest.raises(ValueError, match="teacher_topk.*token"):
        build_module(loss=get_loss("kto"), policy=TINY, optimizer=opt, teacher_topk=8)
    with pytest.raises(ValueError, match="unpaired"):
        UnpairedModule(policy=TINY, loss=get_loss("dpo"), optimizer=opt)


def test_packed_and_padded_match_each_row_alone_and_kl_rows_are_the_mismatched_pairs(tiny_module, dm, batch):
    """Row i's two log-probs are log π(y_i|x_i) and log π(y'_i|x_i), y'_i the row's KL completion (an other
    prompt's completion); each is checked against a forward of that sequence alone, without padding."""
    packed = tiny_module(get_loss("kto"), lr=1.0, reference_cache=None)
    padded = tiny_module(get_loss("kto"), lr=1.0, reference_cache=None, forward="padded")
    view = packed.pair_view(batch, kl=True)
    with torch.no_grad():
        a, counts = packed.sequence_logps(packed.policy, view)
        b, _ = padded.sequence_logps(padded.policy, view)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    n = batch["index"].shape[0]
    rows = {ex["index"]: ex for ex in dm.datasets["train"]}
    for i, index in enumerate(batch["index"].tolist()):
        ex = rows[index]
        assert ex["kl_completion_ids"] != ex["completion_ids"]
        for k, completion in ((i, ex["completion_ids"]), (n + i, ex["kl_completion_ids"])):
            ids = torch.tensor([ex["prompt_ids"] + completion])
            labels = torch.tensor([[-100] * len(ex["prompt_ids"]) + completion])
            with torch.no_grad():
                alone, length = response_logps(packed.policy, ids, torch.ones_like(ids), labels)
            torch.testing.assert_close(a[k : k + 1], alone, rtol=1e-5, atol=1e-4)
            assert counts[k] == length[0] == len(completion)


def test_a_kto_step_moves_desirable_rewards_above_undesirable_ones(tiny_module, batch):
    module = tiny_module(get_loss("kto", beta=1.0), lr=1.0, reference_cache=None)
    module.policy.train()
    loss, metrics = module.compute(batch)
    assert loss.item() == pytest.approx(0.5, abs=1e-6)  # policy == reference: every row costs λ (1 − σ(0))
    assert metrics["kl/reference"].eq(0).all()
    before = {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
    loss.backward()
    torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.05).step()
    assert all(not torch.equal(p, before[n]) for n, p in module.named_parameters() if p.requires_grad)
    with torch.no_grad():
        _, after = module.compute(batch)
    desirable = batch["desirable"]  # the rows' rewards part: desirable above undesirable
    assert after["reward/desirable"][desirable].mean() > after["reward/undesirable"][~desirable].mean()


def test_pair_metrics_cover_exactly_the_pairs_in_the_batch():
    """Rows 0/1 are pair 7 (both here: rewards 0.2 and −0.1), row 2 is pair 8 without its mate, row 3 came
    from no pair: margin 0.3 and accuracy 1 on rows 0/1, NaN (not counted) on rows 2/3."""
    m = pair_metrics(
        torch.tensor([0.2, -0.1, 0.5, 0.0]),
        torch.tensor([True, False, True, False]),
        torch.tensor([7, 7, 8, -1]),
    )
    assert m["reward/margin"][:2].tolist() == pytest.approx([0.3, 0.3]) and m["reward/accuracy"][
        :2
    ].tolist() == [1, 1]
    assert m["reward/margin"][2:].isnan().all() and m["reward/accuracy"][2:].isnan().all()


def _trainer(**kw):
    return L.Trainer(
        **{"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
           "enable_model_summary": False, "num_sanity_val_steps": 0, **kw}
    )  # fmt: skip


def test_validation_means_are_over_exactly_the_rows_each_metric_concerns(tiny_data, tiny_module):
    """Odd eval batches (3 rows) mix the classes unevenly and split pairs; the epoch metrics must still be the
    mean over every desirable (undesirable) row, and the pair accuracy over every pair whose rows met."""
    dm = tiny_data(**{**UNPAIRED, "eval_batch_size": 3})
    module = tiny_module(get_loss("kto"), lr=1.0, reference_cache=None)
    got = _trainer().validate(module, datamodule=dm, verbose=False)[0]
    logps, labels = [], []
    with torch.no_grad():
        for b in dm.val_dataloader():
            logps.append(module.sequence_logps(module.policy, module.pair_view(b, kl=False))[0])
            labels.append(b["desirable"])
    logps, labels = torch.cat(logps), torch.cat(labels)
    assert got["val/logps/desirable"] == pytest.approx(logps[labels].mean().item(), rel=1e-5)
    assert got["val/logps/undesirable"] == pytest.approx(logps[~labels].mean().item(), rel=1e-5)
    assert got["val/reward/margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference


def test_reference_cache_holds_matched_and_mismatched_reference_logps(tiny_module, dm, tmp_path):
    cached = tiny_module(get_loss("kto"), lr=1.0, reference_cache=str(tmp_path / "ref"))
    _trainer(max_steps=1, limit_val_batches=0).fit(cached, datamodule=dm)
    assert list((tmp_path / "ref").glob("*.pt"))
    online = tiny_module(
        get_loss("kto"), lr=1.0, reference_cache=None
    )  # untrained: the frozen reference copy
    for b in dm.loader("train"):
        table = cached._reference_tables["train"][b["index"]]
        torch.testing.assert_close(
            table.t().reshape(-1), online.reference_logps(b, kl=True), rtol=1e-5, atol=1e-4
        )


def test_lora_reference_is_the_policy_without_adapters(tiny_module, batch):
    module = tiny_module(get_loss("kto"), lr=1.0, reference_cache=None, policy=TINY_LORA)
    assert module.reference is None
    ref_before = module.reference_logps(batch, kl=True)
    perturb_lora(module.policy)
    torch.testing.assert_close(module.reference_logps(batch, kl=True), ref_before)
    with torch.no_grad():
        policy = module.sequence_logps(module.policy, module.pair_view(batch, kl=True))[0]
    assert not torch.allclose(policy, ref_before)


def test_bco_state_moves_in_training_only_and_is_checkpointed(tiny_module, batch):
    module = tiny_module(get_loss("bco"), lr=1.0, reference_cache=None)
    perturb = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.5)
    module.policy.train()
    loss, _ = module.compute(batch)
    loss.backward()
    perturb.step()  # the policy leaves the reference: rewards are no longer 0
    module.compute(batch)
    state = {k: v.clone() for k, v in module.loss_state.items()}
    assert state["reward_count"].item() == 2 * batch["index"].shape[0] and state["reward_mean"].item() != 0
    module.eval()
    with torch.no_grad():
        module.compute(batch)
    assert {k: v.item() for k, v in module.loss_state.items()} == {k: v.item() for k, v in state.items()}
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    fresh = tiny_module(get_loss("bco"), lr=1.0, reference_cache=None)
    fresh.on_load_checkpoint(checkpoint)
    assert fresh.loss_state["reward_mean"].item() == state["reward_mean"].item()


def test_a_pair_batch_is_a_clear_error(tiny_data, tiny_module):
    pairs = tiny_data(max_samples=2, batch_size=2)
    with pytest.raises(KeyError, match="data.unpair=true"):
        tiny_module(get_loss("kto"), lr=1.0, reference_cache=None).compute(
            next(iter(pairs.train_dataloader()))
        )

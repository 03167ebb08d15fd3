"""RewardModule on the tiny model: a one-output classifier on the causal LM's weights, padding-free rewards,
a step that ranks chosen higher, and a saved folder that transformers, RewardModel and pd-convert agree on."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS, perturb_lora

from prefdistill.convert import head_of_state, save_final_policy
from prefdistill.data import PreferenceDataModule
from prefdistill.losses import get_loss
from prefdistill.models import load_model, load_tokenizer, record_run_spec

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
TINY_LORA = instantiate(
    OmegaConf.load(CONFIGS / "model" / "tiny.yaml"),
    lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
)


@pytest.fixture(scope="module")
def dm():
    dm = PreferenceDataModule(
        source="shipped", max_samples=4, batch_size=4, max_length=256, max_prompt_length=192
    )
    dm.connect(load_tokenizer(TINY))
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def batch(dm):
    return next(iter(dm.loader("train")))


def test_the_policy_is_a_one_output_classifier_on_the_causal_lm_weights(tiny_module):
    module = tiny_module("reward", lr=0.1)
    policy = module.policy
    assert type(policy).__name__ == "LlamaForSequenceClassification" and policy.config.num_labels == 1
    assert policy.config.pad_token_id == load_tokenizer(TINY).pad_token_id
    lm = load_model(TINY)
    torch.testing.assert_close(
        policy.model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight
    )
    again = tiny_module("reward", lr=0.1)  # the new head is drawn from the spec's seed, not the global RNG
    torch.manual_seed(123)
    torch.testing.assert_close(again.policy.score.weight, policy.score.weight)


def test_lora_trains_the_adapters_and_the_head(tiny_module):
    trainable = [
        n for n, p in tiny_module("reward", policy=TINY_LORA, lr=0.1).named_parameters() if p.requires_grad
    ]
    assert any("score" in n for n in trainable) and all("lora_" in n or "score" in n for n in trainable)


def test_rewards_are_the_score_of_each_row_alone(tiny_module, batch):
    module = tiny_module("reward", lr=0.1)
    with torch.no_grad():
        chosen, rejected = module.rewards(batch)
    for side, rewards in (("chosen", chosen), ("rejected", rejected)):
        for i in range(rewards.shape[0]):
            n = int(batch[f"{side}_attention_mask"][i].sum())
            ids = batch[f"{side}_input_ids"][i : i + 1, :n]
            with torch.no_grad():
                alone = module.policy(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, 0]
            torch.testing.assert_close(rewards[i], alone, rtol=1e-5, atol=1e-5)


def test_a_step_ranks_chosen_above_rejected_and_loss_is_bradley_terry(tiny_module, batch):
    module = tiny_module("reward", lr=0.1)
    loss, metrics = module.compute(batch)
    margin = metrics["reward/chosen"] - metrics["reward/rejected"]
    assert loss.item() == pytest.approx(torch.nn.functional.softplus(-margin).mean().item(), rel=1e-5)
    loss.backward()
    torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.5).step()
    with torch.no_grad():
        _, after = module.compute(batch)
    assert (after["reward/chosen"] - after["reward/rejected"]).mean() > margin.mean()


def test_margin_needs_scored_pairs(tiny_module, batch):
    module = tiny_module(get_loss("reward", margin=True), lr=0.1)
    with pytest.raises(KeyError, match="scores"):
        module.compute(batch)
    n = batch["chosen_input_ids"].shape[0]
    scored = {**batch, "chosen_scores": torch.full((n,), 2.0), "rejected_scores": torch.zeros(n)}
    with torch.no_grad():
        loss, metrics = module.compute(scored)
    margin = metrics["reward/chosen"] - metrics["reward/rejected"]
    assert loss.item() == pytest.approx(torch.nn.functional.softplus(2.0 - margin).mean().item(), rel=1e-5)


def test_saved_folder_scores_as_training_did_in_transformers_reward_model_and_pd_convert(
    tiny_module, dm, batch, tmp_path
):
    """LoRA reward model -> a standalone folder (no adapter); AutoModelForSequenceClassification and
    RewardModel(input_format="chat") on the raw texts reproduce the training rewards; pd-convert of a
    checkpoint writes the same model."""
    from transformers import AutoModelForSequenceClassification

    from prefdistill.convert import convert_checkpoint
    from prefdistill.eval.reward import RewardModel

    module = tiny_module("reward", policy=TINY_LORA, lr=0.1)
    perturb_lora(module.policy)
    with torch.no_grad():
        module.policy.base_model.model.score.modules_to_save["default"].weight.normal_()
        chosen, rejected = module.rewards(batch)
    trainer = SimpleNamespace(strategy=SimpleNamespace(), is_global_zero=True)
    folder = save_final_policy(
        trainer, module, TINY_LORA, load_tokenizer(TINY), tmp_path / "model", merge=False
    )
    assert not (folder / "adapter_config.json").exists()
    loaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
    mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=ids, attention_mask=mask).logits[:, 0], torch.cat([chosen, rejected])
        )
    records = [dm.records["train"][i] for i in batch["index"].tolist()]
    rm = RewardModel(str(folder), input_format="chat", device="cpu")
    scores = rm.score([r.prompt for r in records], [r.chosen for r in records])
    torch.testing.assert_close(torch.tensor(scores), chosen, rtol=1e-5, atol=1e-5)

    state = {f"policy.{n}": p.detach() for n, p in module.policy.named_parameters() if p.requires_grad}
    assert head_of_state({k.removeprefix("policy."): v for k, v in state.items()}) == "score"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": state}, run / "checkpoints" / "last.ckpt")
    record_run_spec(TINY_LORA, run, "policy")
    converted = convert_checkpoint(run / "checkpoints" / "last.ckpt", tmp_path / "converted")
    again = AutoModelForSequenceClassification.from_pretrained(converted).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            again(input_ids=ids, attention_mask=mask).logits[:, 0], torch.cat([chosen, rejected])
        )

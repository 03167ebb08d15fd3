"""Every model family we ship a config for, through every path that runs it (tiny random-init configs).

Per family (llama, mistral, gemma2, gpt2, gpt_neo, qwen2, gemma3_text; windows of 8 tokens on rows of up
to ~60, Gemma-2 soft-capping on, see ``families.py``): the shared-prompt packed forward equals the padded
one, padded log-probs equal each row's own unpadded forward, LoRA's adapter-disabled reference is the
base model, greedy generation equals ``model.generate``, and the reference cache holds the online
reference's numbers.

Tolerance (fp32): summed log-probs agree to ``1e-5 + 1e-6 * |logp|`` (the paths run the same weights
through differently shaped matmuls, so float32 sums are reassociated; measured differences <= 2e-5 on
sums of magnitude ~80), gradients to ``1e-5 + 1e-4 * |g|``.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial

import pytest
import torch
from families import (
    CONFIGS,
    NO_SDPA,
    NO_SDPA_ERROR,
    V,
    default_attn,
    grads,
    list_batch,
    pair_batch,
    random_model,
)

from prefdistill.generation import SamplingParams
from prefdistill.generation.hf import HFGenerator
from prefdistill.losses import get_loss
from prefdistill.models import ModelSpec, load_model, load_tokenizer, response_logps, response_token_logps
from prefdistill.models.logprobs import naive_response_logps
from prefdistill.models.packing import grouped_response_logps, interleave_pairs, shared_prompt_logps
from prefdistill.modules import PreferenceModule
from prefdistill.modules.reference_cache import lookup_table

FAMILIES = list(CONFIGS)
LOGP_TOL = dict(atol=1e-5, rtol=1e-6)
GRAD_TOL = dict(atol=1e-5, rtol=1e-4)
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
FALLBACK = "shared-prompt forward unavailable"


def _spec(model_type: str, **kw) -> ModelSpec:
    """The family as a ``ModelSpec``, loaded by ``load_model`` like a shipped config (tiny tokenizer)."""
    init = {"model_type": model_type, **CONFIGS[model_type], "initializer_range": 0.1}
    return ModelSpec(
        f"tiny-{model_type}",
        tokenizer="tiny",
        random_init=init,
        attn_implementation=default_attn(model_type),
        **kw,
    )


def _padded_pairs(model, batch):
    keys = ("input_ids", "attention_mask", "labels")
    ids, mask, labels = (torch.cat([batch[f"chosen_{k}"], batch[f"rejected_{k}"]]) for k in keys)
    return response_logps(model, ids, mask, labels, chunk_size=7)[0]


def _perturb_lora(model) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)


ATTENTION = [(m, "eager") for m in FAMILIES] + [(m, "sdpa") for m in FAMILIES if m not in NO_SDPA]


@pytest.mark.parametrize(("model_type", "attn"), ATTENTION)
def test_packed_equals_padded(model_type, attn, caplog):
    """Pairs (values and gradients) and lists of 4 (values), without falling back; sdpa takes the boolean
    block mask, eager the additive one."""
    model = random_model(model_type, attn)
    pairs, lists = pair_batch(seed=1), list_batch(n=4, seed=2)
    with caplog.at_level(logging.WARNING):
        got, _ = shared_prompt_logps(model, pairs, chunk_size=7)
        want = _padded_pairs(model, pairs)
        torch.testing.assert_close(got, want, **LOGP_TOL)
        g_got, g_want = grads(model, got), grads(model, _padded_pairs(model, pairs))
        assert g_got.keys() == g_want.keys() and g_got
        for name in g_got:
            torch.testing.assert_close(g_got[name], g_want[name], **GRAD_TOL, msg=name)
        with torch.no_grad():
            rows = (lists["input_ids"], lists["attention_mask"], lists["labels"])
            torch.testing.assert_close(
                grouped_response_logps(model, *rows, 4)[0], response_logps(model, *rows)[0], **LOGP_TOL
            )
    assert FALLBACK not in caplog.text


@pytest.mark.parametrize("model_type", sorted(NO_SDPA))
def test_families_without_sdpa_raise_the_documented_error(model_type):
    """Why gemma2/gpt_neo configs say ``eager``: the only error the family tests are allowed to expect.
    When transformers adds SDPA for one of them, this fails and the family moves out of ``NO_SDPA``."""
    with pytest.raises(ValueError, match=NO_SDPA_ERROR):
        random_model(model_type, "sdpa")


@pytest.mark.parametrize("model_type", FAMILIES)
def test_padding_free_logps_equal_each_unpadded_row(model_type):
    """``response_logps`` (backbone + chunked fp32 head, soft-capped for Gemma-2) on right-padded rows ==
    full-logits ``model(...)`` on each row alone, with no padding at all."""
    model = random_model(model_type)
    batch = list_batch(n=3, seed=4)
    with torch.no_grad():
        got, counts = response_logps(
            model, batch["input_ids"], batch["attention_mask"], batch["labels"], chunk_size=5
        )
        for r, length in enumerate(batch["attention_mask"].sum(1).tolist()):
            row = [batch[k][r : r + 1, :length] for k in ("input_ids", "attention_mask", "labels")]
            want, n = naive_response_logps(model, *row)
            torch.testing.assert_close(got[r : r + 1], want, **LOGP_TOL)
            assert counts[r] == n


def test_softcaps_matter():
    """The Gemma-2 config's soft-caps change the log-probs, so the equalities above can see them."""
    batch = list_batch(n=2, seed=4)
    rows = (batch["input_ids"], batch["attention_mask"], batch["labels"])
    with torch.no_grad():
        capped = response_logps(random_model("gemma2"), *rows)[0]
        no_attn_cap = response_logps(random_model("gemma2", attn_logit_softcapping=None), *rows)[0]
        no_final_cap = response_logps(random_model("gemma2", final_logit_softcapping=None), *rows)[0]
    assert (capped - no_attn_cap).abs().max() > 1e-2
    assert (capped - no_final_cap).abs().max() > 1e-2


@pytest.mark.parametrize("model_type", FAMILIES)
def test_lora_with_adapter_disabled_is_the_base_model(model_type):
    base = load_model(_spec(model_type), trainable=False)
    policy = load_model(_spec(model_type, lora=LORA)).eval()
    _perturb_lora(policy)
    batch = pair_batch(seed=5)
    with torch.no_grad():
        want = _padded_pairs(base, batch)
        trained = shared_prompt_logps(policy, batch)[0]
        with policy.disable_adapter():
            ref = shared_prompt_logps(policy, batch)[0]
    torch.testing.assert_close(ref, want, **LOGP_TOL)
    torch.testing.assert_close(trained, _padded_pairs(policy, batch), **LOGP_TOL)
    assert (trained - want).abs().max() > 1e-2  # the adapter matters


@pytest.mark.parametrize("model_type", FAMILIES)
def test_greedy_generation_equals_generate(model_type):
    """Batched greedy decoding (sorted, left-padded, a shared prefix, rows leaving the batch) gives each
    prompt the tokens of ``model.generate`` on it alone; prompts + 6 new tokens outrun the 8-token windows."""
    spec = _spec(model_type)
    model, tokenizer = load_model(spec, trainable=False), load_tokenizer(spec)
    gen = HFGenerator(spec, batch_size=4, model=model, tokenizer=tokenizer, progress=False)
    shared = [1, 9, 8, 7, 6, 5]
    prompts = [shared + [(13 * k + 7 * i) % (V - 3) + 3 for i in range(k)] for k in (14, 2, 9, 5)]
    out = gen.complete_ids(prompts, [None] * len(prompts), SamplingParams(temperature=0.0, max_new_tokens=6))
    for prompt, completion in zip(prompts, out):
        ids = torch.tensor([prompt])
        ref = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
            eos_token_id=sorted(gen.stop_ids), pad_token_id=gen.pad_id,
        )[0, len(prompt):].tolist()  # fmt: skip
        assert completion.token_ids == [t for t in ref if t not in gen.stop_ids]
    assert len({tuple(c.token_ids) for c in out}) > 1  # not one answer for every prompt


@pytest.mark.parametrize("model_type", FAMILIES)
def test_reference_cache_equals_online_reference(model_type):
    """Cached reference log-probs (one pass over the data, LoRA disabled) == the online reference == the
    base model's padded forward, for every row looked up by its dataset index."""
    spec = _spec(model_type, lora=LORA)
    module = PreferenceModule(policy=spec, loss=get_loss("dpo"), optimizer=partial(torch.optim.SGD, lr=0.1))
    module.configure_model()
    _perturb_lora(module.policy)
    batches = [pair_batch(n=2, seed=6), pair_batch(n=3, seed=7)]
    batches[1]["index"] += 2
    table = lookup_table(module._compute_reference(batches, "train"))
    base = load_model(dataclasses.replace(spec, lora=None), trainable=False)
    for batch in batches:
        with torch.no_grad():
            want = _padded_pairs(base, batch).view(2, -1).t()  # (B, 2) [chosen, rejected]
            online = module.reference_logps(batch, ("chosen", "rejected")).view(2, -1).t()
        torch.testing.assert_close(table[batch["index"]], want, **LOGP_TOL)
        torch.testing.assert_close(online, want, **LOGP_TOL)


BF16_UNIT_ROUNDOFF = 2.0**-8


@pytest.mark.parametrize("model_type", FAMILIES)
def test_bf16_copy_logps_within_the_rounding_bound_of_fp32(model_type):
    """A bf16 copy of the same weights, through the packed forward: float32 log-probs, per token within
    ``8 u max_v |z_v|`` of fp32 (u = 2^-8, bf16's unit roundoff; z the fp32 logits at that position).

    Why that bound: log p_t = z_t - logsumexp(z), so a relative error e on every logit moves log p_t by
    at most 2 e max|z|; the head's inputs (hidden state, weight) are each rounded once (2u) and the hidden
    state carries the rounding of the layers below (a few u more): e <= 4u. Measured on these 7 families
    with peaked logits (init 0.2, max|z| ~ 2-5): at most 4.7 u max|z|. The log-softmax itself runs in
    float32 (``tests/test_bf16.py`` checks that to 1e-5)."""
    model = random_model(model_type, initializer_range=0.2)
    bf16 = random_model(model_type, dtype=torch.bfloat16, initializer_range=0.2)
    bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    batch = list_batch(n=4, seed=3)
    rows = (batch["input_ids"], batch["attention_mask"], batch["labels"])
    with torch.no_grad():
        want, mask = response_token_logps(model, *rows)
        got, _ = response_token_logps(bf16, *rows)
        sums, _ = grouped_response_logps(bf16, *rows, 4)
        logits = model(input_ids=rows[0], attention_mask=rows[1]).logits[:, :-1]  # (N, T-1, V)
    z_max = torch.nn.functional.pad(logits.abs().amax(-1), (1, 0))  # (N, T), aligned with labels
    bound = 8 * BF16_UNIT_ROUNDOFF * z_max
    assert got.dtype == sums.dtype == torch.float32
    error = (got - want).abs()
    assert (error[mask] <= bound[mask]).all(), (error / bound)[mask].max()
    assert error[mask].max() > 0  # the bf16 copy really ran in bf16
    assert ((sums - want.sum(-1)).abs() <= (bound * mask).sum(-1) + 1e-4).all()  # packed: the same bound


def test_interleave_pairs_orders_chosen_then_rejected_per_pair():
    batch = pair_batch(n=2, seed=0)
    ids, mask, labels = interleave_pairs(batch)
    assert ids.shape[0] == 4 and ids.shape == mask.shape == labels.shape
    for b in range(2):
        for j, side in enumerate(("chosen", "rejected")):
            n = int(batch[f"{side}_attention_mask"][b].sum())
            assert ids[2 * b + j, :n].tolist() == batch[f"{side}_input_ids"][b, :n].tolist()
            assert not mask[2 * b + j, n:].any() and (labels[2 * b + j, n:] == -100).all()

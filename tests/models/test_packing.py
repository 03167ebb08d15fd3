"""Shared-prompt packing mechanics: layouts, masks and windows worked by hand, groups of n responses,
GPT-Neo's local window, fallbacks. Every family against the padded path: ``test_families.py``.

Tolerance (fp32) as there: log-probs ``1e-5 + 1e-6 * |logp|``, gradients ``1e-5 + 1e-4 * |g|``.
"""

from __future__ import annotations

import logging

import pytest
import torch
from families import grads, list_batch, pair_batch, random_model

from prefdistill.data.collate import collate_lists, collate_pairs
from prefdistill.models import load_model, packing, response_logps
from prefdistill.models.logprobs import naive_response_logps
from prefdistill.models.packing import (
    block_mask,
    grouped_response_logps,
    pack_groups,
    shared_prompt_logps,
    unique_tokens,
)

LOGP_TOL = dict(atol=1e-5, rtol=1e-6)
GRAD_TOL = dict(atol=1e-5, rtol=1e-4)
FALLBACK = "shared-prompt forward unavailable"


@pytest.fixture(autouse=True)
def _warn_afresh():
    """Fallback warnings are once per process and reason: each test sees its own."""
    packing._warned.clear()


def _rows(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch["input_ids"], batch["attention_mask"], batch["labels"]


def _assert_groups_match(model, batch, n, layout="rows", with_grads=True):
    got, got_n = grouped_response_logps(model, *_rows(batch), n, chunk_size=7, layout=layout)
    want, want_n = response_logps(model, *_rows(batch), chunk_size=7)
    assert got.dtype == torch.float32 and got_n.tolist() == want_n.tolist()
    torch.testing.assert_close(got, want, **LOGP_TOL)
    if with_grads:
        g_got, g_want = grads(model, got), grads(model, response_logps(model, *_rows(batch))[0])
        assert g_got.keys() == g_want.keys() and g_got
        for name in g_got:
            torch.testing.assert_close(g_got[name], g_want[name], **GRAD_TOL, msg=name)


def test_pack_layout_mask_and_window_by_hand():
    """Prompt [5, 6], responses [7, 8, 9], [10], [11, 12] -> one row [5 6 7 8 9 10 11 12]."""
    examples = [
        {"prompt_ids": [5, 6], "response_ids": [[7, 8, 9], [10], [11, 12]], "scores": [0, 0, 0], "index": 0}
    ]
    packed = pack_groups(*_rows(collate_lists(examples, pad_token_id=0)), 3, "rows")
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 10, 11, 12]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 2, 2, 3]]  # every response restarts at 2
    assert packed.part.tolist() == [[0, 0, 1, 1, 1, 2, 3, 3]]
    # 7,8,9 from offsets 1,2,3; 10 and 11 from the last prompt token (1); 12 from 11 (offset 6)
    assert packed.source.tolist() == [1, 2, 3, 1, 1, 6] and packed.targets.tolist() == [7, 8, 9, 10, 11, 12]
    assert packed.owner.tolist() == [0, 0, 0, 1, 2, 2]
    full = block_mask(packed)[0, 0].int().tolist()
    assert full[7] == [1, 1, 0, 0, 0, 0, 1, 1]  # response 3 sees the prompt and itself only
    assert full[5] == [1, 1, 0, 0, 0, 1, 0, 0]
    assert full[4] == [1, 1, 1, 1, 1, 0, 0, 0]
    # window 3 = positions q-2..q: token 12 (position 3) sees 6 (position 1) six physical slots back,
    # and not 5 (position 0); response 1's tokens never count toward response 3's window.
    windowed = block_mask(packed, window=3)[0, 0].int().tolist()
    assert windowed[7] == [0, 1, 0, 0, 0, 0, 1, 1]
    assert windowed[4] == [0, 0, 1, 1, 1, 0, 0, 0]  # token 9 (position 4): positions 2..4
    assert windowed[5] == [1, 1, 0, 0, 0, 1, 0, 0]


def test_pairs_pack_as_groups_of_two():
    examples = [{"prompt_ids": [5, 6], "chosen_ids": [7, 8, 9], "rejected_ids": [10], "index": 0}]
    batch = collate_pairs(examples, pad_token_id=0)
    packed = pack_groups(*packing.interleave_pairs(batch), 2)
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9, 10]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 4, 2]]
    assert block_mask(packed)[0, 0, 5].int().tolist() == [1, 1, 0, 0, 0, 1]  # rejected never sees chosen


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("model_type", ["llama", "mistral", "gpt_neo"])
def test_groups_of_n_equal_padded(model_type, n, caplog):
    """Ragged lists (responses of 1..12 tokens, windows of 8): values and gradients, no fallback."""
    model = random_model(model_type)
    with caplog.at_level(logging.WARNING):
        _assert_groups_match(model, list_batch(b=3, n=n, seed=n), n)
    assert FALLBACK not in caplog.text


@pytest.mark.parametrize("layout", ["rows", "flat"])
def test_tiny_model_groups_and_pairs(tiny_spec, layout, caplog):
    """The shipped tiny config: lists of 4 and pairs, both layouts."""
    model = load_model(tiny_spec).eval()
    with caplog.at_level(logging.WARNING):
        _assert_groups_match(model, list_batch(n=4, seed=9), 4, layout)
        pairs = pair_batch(seed=3)
        keys = ("input_ids", "attention_mask", "labels")
        padded = response_logps(
            model, *(torch.cat([pairs[f"chosen_{k}"], pairs[f"rejected_{k}"]]) for k in keys)
        )[0]
        torch.testing.assert_close(shared_prompt_logps(model, pairs, layout=layout)[0], padded, **LOGP_TOL)
    assert FALLBACK not in caplog.text


def test_tiny_lora_groups(tiny_lora_spec):
    model = load_model(tiny_lora_spec).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    _assert_groups_match(model, list_batch(n=3, seed=11), 3)


def test_flat_layout_is_padding_free(tiny_spec):
    """Very unequal lengths: the flat layout holds every prompt once and every response, nothing else."""
    model = load_model(tiny_spec).eval()
    batch = list_batch(b=4, n=3, seed=7, prompt=(2, 12), response=(1, 15))
    packed = pack_groups(*_rows(batch), 3, "flat")
    assert packed.input_ids.shape == (1, unique_tokens(batch)) and (packed.segment >= 0).all()
    with torch.no_grad():
        _assert_groups_match(model, batch, 3, "flat", with_grads=False)


def test_unique_tokens_by_hand():
    lists = [{"prompt_ids": [5, 6, 7], "response_ids": [[8], [9, 10]], "scores": [0, 1], "index": 0}]
    assert unique_tokens(collate_lists(lists, pad_token_id=0)) == 3 + 1 + 2
    pairs = [{"prompt_ids": [5, 6], "chosen_ids": [7, 8, 9], "rejected_ids": [10], "index": 0}]
    assert unique_tokens(collate_pairs(pairs, pad_token_id=0)) == 2 + 3 + 1


def test_rows_that_do_not_split_into_groups_raise():
    batch = list_batch(b=2, n=3)
    with pytest.raises(ValueError, match="6 rows do not split into groups of 4"):
        pack_groups(*_rows(batch), 4)


def test_gpt_neo_local_window_with_activation_checkpointing():
    """Training mode with non-reentrant checkpointing: the recomputation in backward sees the same packed
    mask, so the hooks apply the position window again and gradients equal the padded path's."""
    model = random_model("gpt_neo")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()  # GPT-Neo's dropouts are 0 in this config: train mode only turns checkpointing on
    _assert_groups_match(model, list_batch(b=2, n=3, seed=5), 3)


def test_gpt_neo_is_unchanged_after_a_packed_forward():
    """The hooks restore the physical local window: plain forwards afterwards equal a fresh model's."""
    model, fresh = random_model("gpt_neo"), random_model("gpt_neo")
    batch = list_batch(n=4, seed=1)
    row = [batch[k][-1:] for k in ("input_ids", "attention_mask", "labels")]
    with torch.no_grad():
        grouped_response_logps(model, *_rows(batch), 4)
        torch.testing.assert_close(naive_response_logps(model, *row)[0], naive_response_logps(fresh, *row)[0])
    local = packing._gpt_neo_local_layers(model)
    assert local and all("physical_window_bias" not in layer.__dict__ for layer in local)
    assert not torch.equal(local[0].bias, torch.ones_like(local[0].bias).tril())  # windowed again


def test_gpt_neo_row_beyond_its_causal_buffer_falls_back(caplog):
    model = random_model("gpt_neo", max_position_embeddings=40)
    batch = list_batch(b=3, n=2, seed=3, prompt=(6, 6), response=(5, 6))  # flat row >= 48, each row <= 18
    with caplog.at_level(logging.WARNING), torch.no_grad():
        _assert_groups_match(model, batch, 2, "flat", with_grads=False)
    assert "'gpt_neo'" in caplog.text and "max_position_embeddings" in caplog.text


def test_unsupported_family_warns_once_and_falls_back(caplog):
    model = random_model("opt", "sdpa", hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                         word_embed_proj_dim=32, max_position_embeddings=128)  # fmt: skip
    with caplog.at_level(logging.WARNING):
        _assert_groups_match(model, list_batch(seed=2), 4, with_grads=False)
        grouped_response_logps(model, *_rows(list_batch(seed=5)), 4)
    hits = [r for r in caplog.records if FALLBACK in r.getMessage()]
    assert len(hits) == 1 and "'opt'" in hits[0].getMessage()


def test_different_prompts_in_a_group_fall_back(tiny_spec, caplog):
    model = load_model(tiny_spec).eval()
    batch = list_batch(n=3, seed=4)
    batch["input_ids"][1, 0] += 1  # response 2 of prompt 1 has another prompt now
    with caplog.at_level(logging.WARNING), torch.no_grad():
        got, _ = grouped_response_logps(model, *_rows(batch), 3)
        torch.testing.assert_close(got, response_logps(model, *_rows(batch))[0])
    assert "different prompts" in caplog.text


def test_pairs_with_different_prompts_fall_back(tiny_spec, caplog):
    model = load_model(tiny_spec).eval()
    batch = pair_batch()
    batch["rejected_input_ids"][0, 0] += 1
    with caplog.at_level(logging.WARNING), torch.no_grad():
        got, _ = shared_prompt_logps(model, batch)
        keys = ("input_ids", "attention_mask", "labels")
        want = response_logps(
            model, *(torch.cat([batch[f"chosen_{k}"], batch[f"rejected_{k}"]]) for k in keys)
        )[0]
    torch.testing.assert_close(got, want)
    assert "different prompts" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["gemma2", "mistral"])
def test_flex_attention_block_mask_equals_eager_padded(model_type, caplog):
    """``flex_attention`` gets a ``BlockMask`` (Gemma-2 soft-caps in its score_mod; Mistral's window in the
    mask). Forward only: torch 2.13 has no flex-attention backward on CPU. ~10 s each (compilation)."""
    eager, flex = random_model(model_type, "eager"), random_model(model_type, "flex_attention")
    batch = list_batch(n=3, seed=2)
    with torch.no_grad(), caplog.at_level(logging.WARNING):
        want = response_logps(eager, *_rows(batch))[0]
        got = grouped_response_logps(flex, *_rows(batch), 3)[0]
    torch.testing.assert_close(got, want, **LOGP_TOL)
    assert FALLBACK not in caplog.text

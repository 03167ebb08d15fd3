"""HF backend: batched greedy == one-at-a-time ``model.generate``; seeds; n samples; stop strings; eos."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from prefdistill.generation import SamplingParams

PROMPTS = [
    "What is the capital of France?",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}],
    "a b c d e f g h i j k",
    "hi",
    "Name the capital city of Japan, please.",
    "x",
]


def test_batched_greedy_equals_one_at_a_time_generate(tiny_gen):
    """Sorted, left-padded batches of 3 give the tokens HF ``generate`` gives each prompt alone."""
    params = SamplingParams(temperature=0.0, max_new_tokens=16)
    batched = tiny_gen.generate_completions(PROMPTS, params)
    for prompt, (completion,) in zip(PROMPTS, batched):
        ids = torch.tensor([tiny_gen.encode(prompt)])
        ref = tiny_gen.model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
            eos_token_id=sorted(tiny_gen.stop_ids), pad_token_id=tiny_gen.pad_id,
        )[0, ids.shape[1]:].tolist()  # fmt: skip
        ref = [t for t in ref if t not in tiny_gen.stop_ids]
        assert completion.token_ids == ref
        assert completion.text == tiny_gen.tokenizer.decode(ref, skip_special_tokens=True)
    assert len({c[0].text for c in batched}) > 1  # the check is not vacuous


def test_shared_prefix_batches_match_generate(tiny_gen):
    """n=3 greedy samples of one prompt share its whole prefix (encoded once): each equals ``generate``."""
    prompt = "Name the capital city of Japan, please."
    rows = tiny_gen.generate_completions(
        [prompt, prompt + " Now."], SamplingParams(temperature=0.0, max_new_tokens=12, n=3)
    )
    for p, row in zip([prompt, prompt + " Now."], rows):
        ids = torch.tensor([tiny_gen.encode(p)])
        ref = tiny_gen.model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
            eos_token_id=sorted(tiny_gen.stop_ids), pad_token_id=tiny_gen.pad_id,
        )[0, ids.shape[1]:].tolist()  # fmt: skip
        assert all(c.token_ids == [t for t in ref if t not in tiny_gen.stop_ids] for c in row)


def test_prompt_ids_have_exactly_one_bos(tiny_gen):
    bos = tiny_gen.tokenizer.bos_token_id
    for prompt in PROMPTS:
        ids = tiny_gen.encode(prompt)
        assert ids[0] == bos and ids[1] != bos


def test_seeded_sampling_is_reproducible_and_batch_invariant(tiny_gen):
    params = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, max_new_tokens=10, n=2, seed=3)
    first = tiny_gen.generate(PROMPTS, params)
    again = tiny_gen.generate(PROMPTS, params)
    tiny_gen.batch_size = 5
    try:  # other batch size, reversed order: keys name the prompts, so samples follow them
        reordered = tiny_gen.generate(PROMPTS[::-1], params, keys=list(range(len(PROMPTS)))[::-1])
    finally:
        tiny_gen.batch_size = 3
    assert first == again == reordered[::-1]
    other_seed = tiny_gen.generate(PROMPTS, dataclasses.replace(params, seed=4))
    assert other_seed != first


def test_n_samples_per_prompt_in_input_order(tiny_gen):
    out = tiny_gen.generate(PROMPTS[:3], SamplingParams(temperature=1.0, max_new_tokens=8, n=4, seed=0))
    assert [len(row) for row in out] == [4, 4, 4]
    assert all(len(set(row)) > 1 for row in out)  # independent streams per sample
    single = tiny_gen.generate(
        PROMPTS[1:2], SamplingParams(temperature=1.0, max_new_tokens=8, n=4, seed=0), keys=[1]
    )
    assert single[0] == out[1]


def test_top_k_one_and_tiny_top_p_are_greedy(tiny_gen):
    greedy = tiny_gen.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=8))
    assert tiny_gen.generate(PROMPTS, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=8)) == greedy
    assert tiny_gen.generate(PROMPTS, SamplingParams(temperature=0.7, top_p=1e-6, max_new_tokens=8)) == greedy


def test_stop_strings_cut_the_text_and_end_the_row(tiny_gen):
    params = SamplingParams(temperature=0.0, max_new_tokens=16)
    (full,) = tiny_gen.generate_completions(PROMPTS[:1], params)[0]
    stop = full.text[5:8]
    assert stop and full.text.find(stop) == 5
    (cut,) = tiny_gen.generate_completions(PROMPTS[:1], dataclasses.replace(params, stop=(stop, "never")))[0]
    assert cut.text == full.text[:5]
    assert cut.finish_reason == "stop" and cut.num_tokens < full.num_tokens


def test_eos_ends_the_row_and_is_stripped(tiny_gen):
    params = SamplingParams(temperature=0.0, max_new_tokens=16)
    (full,) = tiny_gen.generate_completions(PROMPTS[:1], params)[0]
    k = next(k for k in range(1, 16) if full.token_ids[k] not in full.token_ids[:k])
    tiny_gen.stop_ids.add(full.token_ids[k])  # pretend that token is the eos
    try:
        (ended,) = tiny_gen.generate_completions(PROMPTS[:1], params)[0]
    finally:
        tiny_gen.stop_ids.discard(full.token_ids[k])
    assert ended.finish_reason == "eos" and ended.token_ids == full.token_ids[:k]
    assert ended.text == tiny_gen.tokenizer.decode(full.token_ids[:k], skip_special_tokens=True)


def test_sampling_params_validation():
    with pytest.raises(ValueError):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError):
        SamplingParams(n=0)
    assert SamplingParams(stop=["a"]).stop == ("a",)

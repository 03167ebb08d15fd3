"""Reward-model scoring on a tiny random classifier built locally, and win rates with ties = 1/2."""

from __future__ import annotations

import pytest
import torch

from prefdistill.eval.reward import RewardModel
from prefdistill.eval.suites import EvalSuite, Example
from prefdistill.models.spec import ASSET_TOKENIZERS

PROMPTS = ["What is 2 + 2?", [{"role": "user", "content": "Say hi."}], "Name a colour.", "Spell cat."]
RESPONSES = ["2 + 2 = 4.", "Hi!", "Blue, and a much longer answer than the others here.", "c a t"]


@pytest.fixture(scope="module")
def tiny_rm():
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(ASSET_TOKENIZERS / "tiny"))
    config = AutoConfig.for_model(
        "bert", vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    return model, tokenizer


def test_scores_are_logit0_and_independent_of_batching(tiny_rm):
    model, tokenizer = tiny_rm
    batched = RewardModel("tiny-rm", batch_size=3, model=model, tokenizer=tokenizer, device="cpu")
    single = RewardModel("tiny-rm", batch_size=1, model=model, tokenizer=tokenizer, device="cpu")
    scores = batched.score(PROMPTS, RESPONSES)
    assert scores == pytest.approx(single.score(PROMPTS, RESPONSES), abs=1e-5)
    # By hand for the first pair: logits[0, 0] of tokenizer(prompt, response).
    with torch.no_grad():
        ref = model(**tokenizer(PROMPTS[0], RESPONSES[0], return_tensors="pt")).logits[0, 0].item()
    assert scores[0] == pytest.approx(ref, abs=1e-5)
    assert batched.name == "rm:tiny-rm" and not batched.uses_reference


def _beats(rm, winners, losers, seed=0) -> dict:
    """The suite's win-rate summary of ``winners`` over ``losers`` under ``rm`` (its T-S win rate: the teacher's
    outputs beating the evaluated model's), the path every evaluation takes."""
    examples = [Example(str(i), p, reference=r) for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))]
    suite = EvalSuite(name="rm-test", reward=rm, rouge=False, seed=seed)
    _, details, _ = suite.score(examples, list(losers), teacher_outputs=list(winners))
    return details["rm/teacher_vs_student"]


def test_win_rate_ties_half_and_bootstrap_ci(tiny_rm):
    model, tokenizer = tiny_rm
    rm = RewardModel("tiny-rm", batch_size=2, model=model, tokenizer=tokenizer, device="cpu")
    same = _beats(rm, RESPONSES, RESPONSES)  # identical texts: every prompt a tie
    assert same["win_rate"] == pytest.approx(50.0) and same["ties"] == 4
    assert same["ci"] == [50.0, 50.0]
    other = ["4", "Hello there, friend.", "Red.", "cat"]
    a = _beats(rm, RESPONSES, other, seed=1)
    b = _beats(rm, other, RESPONSES, seed=1)
    assert a["win_rate"] + b["win_rate"] == pytest.approx(100.0)  # A beats B exactly when B loses to A
    assert a == _beats(rm, RESPONSES, other, seed=1)  # seeded CI
    expected = sum(c > k for c, k in zip(rm.score(PROMPTS, RESPONSES), rm.score(PROMPTS, other))) / 4 * 100
    assert a["win_rate"] == pytest.approx(expected)


@pytest.fixture(scope="module")
def llama_rm_folder(tmp_path_factory):
    """A tiny random ``LlamaForSequenceClassification`` (scalar head, pad set) saved like a trained RM."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(ASSET_TOKENIZERS / "tiny"))
    config = AutoConfig.for_model(
        "llama", vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=64, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("rm") / "llama_rm"
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_chat_format_scores_a_causal_lm_reward_model_folder(llama_rm_folder):
    """Loaded from the folder; each score is logits[0, 0] of one unpadded forward of the prompt as
    training renders it (PromptEncoder: template + BOS) followed by the response ids."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefdistill.data.templates import PromptEncoder

    rm = RewardModel(str(llama_rm_folder), input_format="chat", batch_size=3, device="cpu")
    scores = rm.score(PROMPTS, RESPONSES)
    model = AutoModelForSequenceClassification.from_pretrained(llama_rm_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(llama_rm_folder)
    encoder = PromptEncoder(tokenizer, "auto")
    for prompt, response, score in zip(PROMPTS, RESPONSES, scores):
        prompt_ids, (response_ids,) = encoder.encode(prompt, [response])
        with torch.no_grad():
            direct = model(input_ids=torch.tensor([prompt_ids + response_ids])).logits[0, 0].item()
        assert score == pytest.approx(direct, abs=1e-5)
    assert len(set(scores)) == len(scores)  # the responses are told apart
    single = RewardModel(str(llama_rm_folder), input_format="chat", batch_size=1, device="cpu")
    assert single.score(PROMPTS, RESPONSES) == pytest.approx(scores, abs=1e-5)
    pair = RewardModel(str(llama_rm_folder), input_format="pair", batch_size=1, device="cpu")
    assert pair.score(PROMPTS, RESPONSES) != pytest.approx(scores, abs=1e-5)  # another input, other scores


def test_chat_format_needs_a_pad_token_and_a_known_format(llama_rm_folder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(llama_rm_folder)
    model.config.pad_token_id = None
    tokenizer = AutoTokenizer.from_pretrained(llama_rm_folder)
    rm = RewardModel("no-pad", input_format="chat", model=model, tokenizer=tokenizer, device="cpu")
    with pytest.raises(ValueError, match="pad_token_id is null"):
        rm.score(PROMPTS, RESPONSES)
    with pytest.raises(ValueError, match="input_format must be one of"):
        RewardModel("x", input_format="text")

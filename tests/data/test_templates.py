"""Chat / raw templates: prompt masking inputs, exactly one BOS, responses end with eos."""

from __future__ import annotations

import logging

import pytest

from prefdistill.data import DataError, PromptEncoder, encode_pair
from prefdistill.models.tiny_tokenizer import CHATML_TEMPLATE

PROMPTS = [
    "What is 2 + 2?",
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of France?"},
    ],
]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_chat_response_is_the_assistant_turn(tok, prompt):
    prompt_ids, response_ids = encode_pair(tok, prompt, "Paris is the capital.")
    assert tok.decode(response_ids) == "Paris is the capital.<|im_end|>"
    assert tok.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    assert prompt_ids.count(tok.bos_token_id) == 1 and prompt_ids[0] == tok.bos_token_id
    assert tok.bos_token_id not in response_ids and response_ids[-1] == tok.eos_token_id


def test_chat_matches_full_template_rendering(tok):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    full = tok.encode(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)
    prompt_ids, response_ids = encode_pair(tok, "Hi", "Hello")
    assert prompt_ids + response_ids == full[:-1]  # only the trailing template newline is dropped


def test_raw_template_one_bos_and_eos(tok):
    prompt_ids, response_ids = encode_pair(tok, "Question: 2+2?", "4", template="raw")
    assert prompt_ids[0] == tok.bos_token_id and prompt_ids.count(tok.bos_token_id) == 1
    assert tok.decode(response_ids) == " 4<|im_end|>"


def test_raw_renders_messages_as_hh_transcript(tok):
    prompt_ids, _ = encode_pair(tok, PROMPTS[1], "Paris.", template="raw")
    text = tok.decode(prompt_ids[1:])
    assert (
        text
        == "\n\nSystem: Be brief.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Capital of France?\n\nAssistant:"
    )


def test_auto_without_chat_template_is_raw(tok):
    tok.chat_template = None
    assert PromptEncoder(tok).template == "raw"
    with pytest.raises(DataError, match="no chat template"):
        PromptEncoder(tok, "chat")


def test_duplicated_bos_is_collapsed(tok):
    tok.chat_template = "{{ bos_token }}" + CHATML_TEMPLATE  # the template now emits two BOS
    prompt_ids, _ = encode_pair(tok, "Hi", "Hello")
    assert prompt_ids[:2] != [tok.bos_token_id] * 2 and prompt_ids.count(tok.bos_token_id) == 1


def test_missing_bos_is_added(tok):
    tok.chat_template = CHATML_TEMPLATE.replace("{{ bos_token }}", "")
    prompt_ids, _ = encode_pair(tok, "Hi", "Hello")
    assert prompt_ids[0] == tok.bos_token_id and prompt_ids.count(tok.bos_token_id) == 1


def test_no_bos_token_means_no_bos(tok):
    tok.bos_token = None
    tok.chat_template = CHATML_TEMPLATE.replace("{{ bos_token }}", "")
    prompt_ids, response_ids = encode_pair(tok, "Hi", "Hello", template="raw")
    assert 0 not in prompt_ids + response_ids  # id 0 is <|endoftext|>


def test_non_prefix_template_falls_back_and_logs_once(tok, caplog):
    tok.chat_template = (
        "{% for m in messages %}{% if m.role == 'assistant' %}A: {{ m.content }}{{ eos_token }}"
        "{% else %}Q: {{ m.content }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}Answer:{% endif %}"
    )
    encoder = PromptEncoder(tok)
    with caplog.at_level(logging.WARNING, logger="prefdistill.data.templates"):
        _, responses = encoder.encode("Hi", ["Hello", "Bye"])
    assert [tok.decode(r) for r in responses] == ["Hello<|im_end|>", "Bye<|im_end|>"]
    assert sum("prefix" in r.message for r in caplog.records) == 1


def test_unknown_template_rejected(tok):
    with pytest.raises(ValueError, match="template must be one of"):
        PromptEncoder(tok, "fancy")


def test_bos_that_doubles_as_turn_marker(tok):
    """SmolLM2-Instruct style: bos is <|im_start|>, the template adds no separate BOS."""
    tok.bos_token = "<|im_start|>"
    tok.chat_template = CHATML_TEMPLATE.replace("{{ bos_token }}", "")
    prompt_ids, response_ids = encode_pair(tok, "Hi", "Hello")
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert prompt_ids[0] == im_start and prompt_ids[1] != im_start  # one leading BOS, not two
    assert tok.decode(prompt_ids + response_ids) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>"
    )

"""Build the tiny byte-level BPE tokenizer that ``model=tiny`` and the tests use.

It is trained on a small built-in English corpus, has a ChatML chat template (the
same format as SmolLM2-Instruct) and a BOS token, so every code path that matters
for real checkpoints (chat template, prompt masking, one BOS) runs offline on it.
Byte-level BPE encodes any text, so no input is ever out of vocabulary.

Regenerate the shipped copy with ``python -m prefdistill.models.tiny_tokenizer``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

TINY_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tokenizers" / "tiny"

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]

CHATML_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = (
    "the a an of to and in is it you that he was for on are with as I his they be at one have "
    "this from or had by word but what some we can out other were all there when up use your how "
    "said each she which do their time if will way about many then them write would like so these "
    "her long make thing see him two has look more day could go come did number sound no most "
    "people my over know water than call first who may down side been now find any new work part "
    "take get place made live where after back little only round man year came show every good me "
    "give our under name very through just form sentence great think say help low line differ turn "
    "cause much mean before move right boy old too same tell does set three want air well also play "
    "small end put home read hand port large spell add even land here must big high such follow act "
    "why ask men change went light kind off need house picture try us again animal point mother world "
    "near build self earth father answer question capital city country France Paris Italy Rome summary "
    "post reddit assistant human user please thank sorry correct wrong plus minus equals sum total "
    "because therefore explain short answer helpful polite rude story poem list step first second"
).split()


def _corpus():
    words = _WORDS
    for i, (a, b, c) in enumerate(itertools.product(words[:60], words[60:120], words[120:150])):
        if i > 20000:
            break
        yield f"{a} {b} {c}. {a.capitalize()} is {b}, {c}? {i % 97} + {i % 13} = {i % 97 + i % 13}\n"


def build(out_dir: Path = TINY_TOKENIZER_DIR, vocab_size: int = 1024) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return out_dir


if __name__ == "__main__":
    print(build())

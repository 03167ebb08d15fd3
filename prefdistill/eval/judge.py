"""LLM-judge pairwise win rate through any OpenAI-compatible chat endpoint (DPO paper, App. C).

The judge sees the query and two responses as "A" and "B"; which one is the candidate is drawn per
example from ``random.Random(seed)``. The verdict is parsed strictly from the final non-empty line
(``Preferred: A`` for TL;DR, ``More helpful: B`` for HH; quotes and a trailing period allowed);
anything else is a parse failure, counted and reported, and left out of the win rate.

Answers are cached on disk, one JSON file per request keyed by (judge model, full rendered prompt,
which encodes the response pair and their order, and the sampling settings), so a re-run sends
no requests. Requests run in a thread pool; 429, 5xx, timeouts and connection errors are retried
with exponential backoff (``Retry-After`` honoured, capped).

The API key is read from the environment variable named by ``api_key_env`` at request time: it is
never stored on the object, written to the cache or results, or logged (error texts are redacted).

    judge = Judge(model="gpt-4o-2024-08-06", template="tldr", cache_dir="~/.cache/prefdistill/judge")
    summary = judge.win_rate(queries, candidates, comparators, seed=0)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefdistill.eval.metrics import win_rate
from prefdistill.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)

_INSTRUCTION = (
    'FIRST provide a one-sentence comparison of the two {what}, {why}. SECOND, on a new line, state only "A" or "B" '
    "to indicate {choice}. Your response should use the format:\n"
    "Comparison: <one-sentence comparison and explanation>\n"
    '{label}: <"A" or "B">'
)
_SUMMARY_TAIL = _INSTRUCTION.format(
    what="summaries", why="explaining which you prefer and why", choice="your choice", label="Preferred"
)
# DPO paper (Rafailov et al. 2023) App. C. {query}/{a}/{b} are filled in one pass.
TEMPLATES: dict[str, tuple[str, str]] = {
    "tldr": (  # "GPT-4 (C)", used for the DPO paper's main TL;DR results
        "Which of the following summaries does a better job of summarizing the most important points in the "
        "given forum post, without including unimportant or irrelevant details? A good summary is both precise "
        "and concise.\n\nPost:\n{query}\n\nSummary A:\n{a}\n\nSummary B:\n{b}\n\n" + _SUMMARY_TAIL,
        "Preferred",
    ),
    "tldr_simple": (  # "GPT-4 (S)"; the paper notes it favours longer summaries
        "Which of the following summaries does a better job of summarizing the most important points in the "
        "given forum post?\n\nPost:\n{query}\n\nSummary A:\n{a}\n\nSummary B:\n{b}\n\n" + _SUMMARY_TAIL,
        "Preferred",
    ),
    "hh": (  # Anthropic-HH, single-turn dialogues
        "For the following query to a chatbot, which response is more helpful?\n\nQuery: {query}\n\n"
        "Response A:\n{a}\n\nResponse B:\n{b}\n\n"
        + _INSTRUCTION.format(
            what="responses",
            why="and explain which you feel is more helpful",
            choice="which response is more helpful",
            label="More helpful",
        ),
        "More helpful",
    ),
}
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def render(template: str, query: str, a: str, b: str) -> str:
    text, _ = TEMPLATES[template]
    values = {"query": query, "a": a, "b": b}
    return re.sub(r"\{(query|a|b)\}", lambda m: values[m.group(1)], text)


def parse_verdict(answer: str, label: str) -> str | None:
    """``"A"``/``"B"`` from a final line ``<label>: A`` (optional quotes/period), else None."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        return None
    m = re.fullmatch(rf"{re.escape(label)}:\s*[\"']?([AB])[\"']?\.?", lines[-1])
    return m.group(1) if m else None


class JudgeError(RuntimeError):
    """A judge request that failed for good (non-retryable status, or retries exhausted)."""


class Judge:
    def __init__(
        self,
        model: str,
        template: str = "tldr",
        *,
        base_url: str | None = None,
        base_url_env: str = "OPENAI_BASE_URL",
        api_key_env: str = "OPENAI_API_KEY",
        cache_dir: str | None = None,
        concurrency: int = 8,
        max_retries: int = 6,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 256,
        system_prompt: str | None = None,
    ):
        if template not in TEMPLATES:
            raise ValueError(f"judge template must be one of {sorted(TEMPLATES)}, got {template!r}")
        self.model, self.template, self.label = model, template, TEMPLATES[template][1]
        self.base_url = (base_url or os.environ.get(base_url_env) or "https://api.openai.com/v1").rstrip("/")
        self.api_key_env = api_key_env
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.concurrency, self.max_retries = concurrency, max_retries
        self.backoff_s, self.max_backoff_s, self.timeout_s = backoff_s, max_backoff_s, timeout_s
        self.temperature, self.max_tokens, self.system_prompt = temperature, max_tokens, system_prompt
        self.name = f"judge:{model}:{template}"

    # --- one request ------------------------------------------------------------------------------
    def _body(self, prompt: str) -> dict:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": prompt})
        return {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _cache_path(self, body: dict) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env)
        return text.replace(key, "***") if key else text

    def _post(self, client, body: dict) -> str:
        key = os.environ.get(self.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        import httpx

        for attempt in range(self.max_retries + 1):
            wait = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            try:
                resp = client.post(f"{self.base_url}/chat/completions", json=body, headers=headers)
            except (httpx.TimeoutException, httpx.TransportError) as err:
                problem = f"{type(err).__name__}"
            else:
                if resp.status_code == 200:
                    return resp.json()["choices"][0]["message"]["content"] or ""
                problem = f"HTTP {resp.status_code}: {self._redact(resp.text[:300])}"
                if resp.status_code not in RETRY_STATUS:
                    raise JudgeError(f"judge request failed: {problem}")
                retry_after = resp.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(self.max_backoff_s, float(retry_after))
            if attempt == self.max_retries:
                raise JudgeError(f"judge request failed after {attempt + 1} attempts: {problem}")
            log.debug("judge request: %s; retrying in %.2f s", problem, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def ask(self, client, prompt: str) -> tuple[str, bool]:
        """``(answer text, from_cache)`` for one rendered judge prompt."""
        body = self._body(prompt)
        path = self._cache_path(body)
        if path is not None and path.is_file():
            return json.loads(path.read_text())["answer"], True
        answer = self._post(client, body)
        if path is not None:
            atomic_write_json(path, {"model": self.model, "request": body, "answer": answer})
        return answer, False

    # --- a whole comparison -----------------------------------------------------------------------
    def win_rate(
        self,
        queries: Sequence[str],
        candidates: Sequence[str],
        comparators: Sequence[str],
        *,
        seed: int = 0,
        n_boot: int = 1000,
    ) -> dict:
        """Judge win rate (%) of ``candidates`` over ``comparators``; per-example details included."""
        import httpx

        if not len(queries) == len(candidates) == len(comparators):
            raise ValueError("queries, candidates and comparators must have the same length")
        rng = random.Random(seed)
        candidate_first = [rng.random() < 0.5 for _ in queries]
        prompts = [
            render(self.template, q, *((c, k) if first else (k, c)))
            for q, c, k, first in zip(queries, candidates, comparators, candidate_first)
        ]
        if not os.environ.get(self.api_key_env):
            log.warning("judge: $%s is not set; sending requests without an API key", self.api_key_env)

        def one(prompt: str):
            try:
                return (*self.ask(client, prompt), None)
            except JudgeError as err:
                return None, False, str(err)

        with httpx.Client(timeout=self.timeout_s) as client, ThreadPoolExecutor(self.concurrency) as pool:
            answers = list(pool.map(one, prompts))
        return self._summarise(answers, candidate_first, seed=seed, n_boot=n_boot)

    def _summarise(self, answers, candidate_first, *, seed: int, n_boot: int) -> dict:
        details, outcomes = [], []
        for (answer, cached, error), first in zip(answers, candidate_first):
            verdict = parse_verdict(answer, self.label) if answer is not None else None
            outcome = None if verdict is None else float(verdict == ("A" if first else "B"))
            if outcome is not None:
                outcomes.append(outcome)
            details.append({
                "candidate": "A" if first else "B", "verdict": verdict, "outcome": outcome,
                "cached": cached, "error": error, "answer": answer,
            })  # fmt: skip
        summary = win_rate(outcomes, n_boot=n_boot, seed=seed)
        errors = sum(d["error"] is not None for d in details)
        failures = sum(d["error"] is None and d["verdict"] is None for d in details)
        summary.update(
            scorer=self.name,
            parse_failures=failures,
            request_errors=errors,
            cached=sum(d["cached"] for d in details),
            candidate_first=sum(candidate_first),
            details=details,
        )
        if failures or errors:
            first_bad = next(d for d in details if d["verdict"] is None)
            log.warning(
                "judge %s: %d of %d verdicts unparseable, %d requests failed (first: %r)",
                self.name, failures, len(details), errors, (first_bad["error"] or first_bad["answer"] or "")[:200],
            )  # fmt: skip
        return summary

"""Text metrics and win-rate statistics: ROUGE, word count, GSM8K answer extraction, bootstrap CIs.

* ROUGE-1/2/L: ``rouge_score`` F-measure x 100 with the Porter stemmer.
* Word count: whitespace-separated words, as the PLaD paper counts generation length.
* GSM8K (after WildEval/ZeroEval ``src/evaluation/math_eval.py``): gold = text
  after ``####``; the prediction is the ``answer`` of the first complete JSON object in the output,
  then a loose ``"answer": ...`` key match, then generic fallbacks (``\\boxed{}``, ``#### x``,
  "the answer is x"); both are sanitised (``$`` and ``,`` removed, ``a/b`` evaluated) and compared
  as the first number (``-?\\d+(\\.\\d+)?``) of each, as floats. No extracted answer = wrong.
* Win rates: per-example outcomes 1 (win), 0.5 (tie), 0 (loss); mean x 100 with a seeded
  percentile-bootstrap confidence interval.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def word_count(text: str) -> int:
    return len(text.split())


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """Per-example ROUGE-1/2/L F-measure x 100 (stemmed): ``{"rouge1": [...], ...}``."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    out: dict[str, list[float]] = {k: [] for k in ROUGE_KEYS}
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)  # (target, prediction)
        for k in ROUGE_KEYS:
            out[k].append(100.0 * scores[k].fmeasure)
    return out


# --- win rates ------------------------------------------------------------------------------------
def outcomes(candidate: Sequence[float], comparator: Sequence[float]) -> list[float]:
    """1 where the candidate scores higher, 0.5 on an exact tie, else 0."""
    if len(candidate) != len(comparator):
        raise ValueError(f"{len(candidate)} candidate scores but {len(comparator)} comparator scores")
    return [1.0 if c > k else 0.5 if c == k else 0.0 for c, k in zip(candidate, comparator)]


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap CI of the mean (same scale as ``values``); ``(nan, nan)`` when empty."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def win_rate(results: Sequence[float], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Summary of per-example outcomes (1/0.5/0): win rate % with its bootstrap CI and counts."""
    x = [float(r) for r in results]
    lo, hi = bootstrap_ci(x, n_boot=n_boot, level=level, seed=seed)
    return {
        "win_rate": 100.0 * float(np.mean(x)) if x else float("nan"),
        "ci": [100.0 * lo, 100.0 * hi],
        "ci_level": level,
        "n": len(x),
        "wins": sum(r == 1.0 for r in x),
        "ties": sum(r == 0.5 for r in x),
        "losses": sum(r == 0.0 for r in x),
    }


# --- GSM8K ----------------------------------------------------------------------------------------
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_LOOSE_ANSWER = re.compile(r"""["']?answer["']?\s*:\s*("(?P<q>(?:[^"\\]|\\.)*)"|(?P<u>[^,}\n]+))""", re.I)
_FALLBACKS = (
    ("boxed", re.compile(r"\\boxed\{([^{}]+)\}")),
    ("hashes", re.compile(r"####\s*([^\n]+)")),
    ("answer_is", re.compile(r"answer is[:\s]*\$?\s*(-?[\d,]+(?:\.\d+)?)", re.I)),
)


def gsm8k_gold(answer: str) -> str:
    """The gold answer of an ``openai/gsm8k`` row: the text after ``####``."""
    if "####" not in answer:
        raise ValueError("GSM8K answer has no '####' marker")
    return answer.split("####")[-1].strip()


def first_json_object(text: str) -> dict | None:
    """The first complete JSON object in ``text`` (e.g. inside a ```json fence), else None."""
    decoder = json.JSONDecoder()
    for start in (m.start() for m in re.finditer(r"\{", text)):
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def extract_answer(output: str) -> tuple[str | None, str]:
    """``(answer, how)``: how in ``json``, ``loose_json``, ``boxed``, ``hashes``, ``answer_is``, ``none``."""
    obj = first_json_object(output)
    if obj is not None and "answer" in obj and obj["answer"] is not None:
        return str(obj["answer"]), "json"
    m = _LOOSE_ANSWER.search(output)
    if m:
        value = m.group("q") if m.group("q") is not None else m.group("u")
        if value and value.strip():
            return value.strip(), "loose_json"
    for how, pattern in _FALLBACKS:
        found = pattern.findall(output)
        if found:
            return found[-1].strip(), how
    return None, "none"


def sanitize(answer: str) -> str:
    """ZeroEval's sanitiser: drop ``$`` and ``,``; evaluate a plain ``a/b`` fraction."""
    answer = answer.replace("$", "").replace(",", "").strip()
    m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)\s*", answer)
    if m and float(m.group(2)) != 0:
        answer = str(float(Fraction(m.group(1)) / Fraction(m.group(2))))
    return answer


def first_number(text: str) -> float | None:
    m = _NUMBER.search(text)
    return float(m.group(0)) if m else None


def gsm8k_correct(output: str, gold: str) -> tuple[bool, str]:
    """``(correct, how the answer was extracted)``; correct iff the first numbers match as floats."""
    answer, how = extract_answer(output)
    if answer is None:
        return False, how
    pred, ref = first_number(sanitize(answer)), first_number(sanitize(gold))
    return (pred is not None and ref is not None and pred == ref), how

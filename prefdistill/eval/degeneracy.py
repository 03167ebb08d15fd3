"""Degeneracy of generated outputs: is the model still answering, or has it collapsed?

A distillation run that pushes the student's own samples down can leave the task's format while its
loss improves (``2 2122222 222102220.`` or ``9 = 9 = 9 = 9.`` for ``Calculate 15 + 3.``). Exact match
then reads 0 and cannot say *why*; these four numbers make a collapse visible at a glance:

* ``degeneracy/answer_rate`` (%): outputs that give an answer of their task family's kind, right or
  wrong (:func:`prefdistill.eval.exact_match.has_answer`), over the prompts exact match can grade;
* ``degeneracy/distinct2`` (%): distinct word bigrams over all bigrams of all outputs -- corpus-level
  distinct-2 (Li et al., 2016, "A Diversity-Promoting Objective Function for Neural Conversation
  Models", Sec. 4.3); low when every output says the same thing;
* ``degeneracy/repeat2`` (%): per output, the share of its word bigrams that repeat an earlier bigram of
  the same output, averaged over outputs -- Welleck et al.'s seq-rep-n (2020, "Neural Text Generation
  with Unlikelihood Training", Sec. 5) at n = 2, since the answers here are a handful of words; high for
  loops such as ``9 = 9 = 9 = 9``;
* ``degeneracy/length_ratio``: words of all outputs over words of all references (1 = as long as the
  references; the collapsed rows run long, with loops, or short, with fragments).

Words are whitespace-separated tokens, lower-cased, as :func:`prefdistill.eval.metrics.word_count` counts
them. :func:`passes` is the guard a hyper-parameter search uses so that a setting whose outputs collapsed
is never chosen for its exact match (see ``DegeneracyGuard``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from prefdistill.eval import exact_match as EM


def _words(text: str) -> list[str]:
    return text.lower().split()


def _bigrams(text: str) -> list[tuple[str, str]]:
    words = _words(text)
    return list(zip(words, words[1:]))


def distinct2(outputs: Sequence[str]) -> float:
    """Distinct word bigrams / all word bigrams over ``outputs`` (%); nan when none has two words."""
    grams = [g for o in outputs for g in _bigrams(o)]
    return 100.0 * len(set(grams)) / len(grams) if grams else float("nan")


def repeat2(output: str) -> float:
    """Share of the output's word bigrams that repeat an earlier one of it (%); 0 below three words."""
    grams = _bigrams(output)
    return 100.0 * (1.0 - len(set(grams)) / len(grams)) if grams else 0.0


def length_ratio(outputs: Sequence[str], references: Sequence[str]) -> float:
    """Words of all outputs / words of all references; nan without reference words."""
    ref_words = sum(len(_words(r)) for r in references)
    return sum(len(_words(o)) for o in outputs) / ref_words if ref_words else float("nan")


def score(outputs: Sequence[str], references: Sequence[str | None], families: Sequence[str | None],
          answers: Sequence[str | None], prompts: Sequence[str]) -> tuple[dict[str, float], dict[str, list]]:  # fmt: skip
    """``(metrics, per_example)``: the four numbers above and, per example, ``has_answer`` (None where
    exact match cannot grade) and ``repeat2``. References that are None (no reference) are left out of the
    length ratio with their outputs."""
    n = len(outputs)
    if not n == len(references) == len(families) == len(answers) == len(prompts):
        raise ValueError(f"degeneracy: {n} outputs but {len(references)} references, {len(families)} families, "
                         f"{len(answers)} answers, {len(prompts)} prompts")  # fmt: skip
    has = [None if a is None else EM.has_answer(f, o, a, p) for o, f, a, p in zip(outputs, families, answers, prompts)]
    graded = [h for h in has if h is not None]
    reps = [repeat2(o) for o in outputs]
    with_ref = [(o, r) for o, r in zip(outputs, references) if r is not None]
    metrics = {
        "degeneracy/answer_rate": 100.0 * sum(graded) / len(graded) if graded else float("nan"),
        "degeneracy/distinct2": distinct2(outputs),
        "degeneracy/repeat2": sum(reps) / n if n else float("nan"),
        "degeneracy/length_ratio": length_ratio([o for o, _ in with_ref], [r for _, r in with_ref]),
    }
    return metrics, {"has_answer": has, "repeat2": reps}


@dataclass(frozen=True)
class DegeneracyGuard:
    """Bounds an output set must meet to count as live: a search objective treats a setting outside them as
    failed (``guarded_value``), whatever its exact match. Defaults: at least 80 % of graded outputs give an
    answer, at most 20 % repeated bigrams, a length within half to twice the references'."""

    min_answer_rate: float = 80.0
    max_repeat2: float = 20.0
    min_length_ratio: float = 0.5
    max_length_ratio: float = 2.0

    def failures(self, metrics: dict[str, float]) -> list[str]:
        """The bounds ``metrics`` (``degeneracy/*`` keys) break, as readable strings; [] when it passes."""
        m = {k.removeprefix("eval/"): v for k, v in metrics.items()}
        checks = (
            ("answer_rate", m.get("degeneracy/answer_rate"), lambda v: v >= self.min_answer_rate,
             f">= {self.min_answer_rate:g}"),
            ("repeat2", m.get("degeneracy/repeat2"), lambda v: v <= self.max_repeat2, f"<= {self.max_repeat2:g}"),
            ("length_ratio", m.get("degeneracy/length_ratio"),
             lambda v: self.min_length_ratio <= v <= self.max_length_ratio,
             f"in [{self.min_length_ratio:g}, {self.max_length_ratio:g}]"),
        )  # fmt: skip
        out = []
        for name, value, ok, bound in checks:
            if value is None:
                raise KeyError(f"degeneracy guard: no degeneracy/{name} in the metrics (the eval suite needs "
                               f"degeneracy: true); got {sorted(m)}")  # fmt: skip
            if value != value or not ok(value):  # nan never passes
                out.append(f"{name}={value:.3g} (needs {bound})")
        return out

    def guarded_value(self, value: float, metrics: dict[str, float]) -> float:
        """``value`` when the outputs pass, else ``value - 1000``: a failed setting ranks below every live one
        and, among failed ones, by its value (exact match is in [0, 100])."""
        return value if not self.failures(metrics) else value - 1000.0

"""Evaluation suites: which prompts, how to generate, and which scorers (``configs/eval/*.yaml``).

An :class:`EvalSuite` is built by Hydra from a suite file (config keys = constructor args). It loads
:class:`Example` s (the generator applies the chat template or raw text, as training does) and
scores given outputs, so the scoring is testable on plain texts without any generation:

* ``task: pairs`` -- a preference dataset's test split; the reference is the chosen response
  (TL;DR reference summary, HH chosen response). Word count, ROUGE-1/2/L, scorer win rates, and with
  ``exact_match: true`` the exact-match accuracy per task family and overall, against the ``answer``
  and ``family`` fields of the split's jsonl rows (:mod:`~prefdistill.eval.exact_match`; the shipped
  demo rows carry them); ``data.with_answer_only: true`` keeps only the prompts it can grade.
* ``task: gsm8k`` -- ``openai/gsm8k`` main/test in the ZeroEval zero-shot JSON format; accuracy.
* ``task: alpacaeval`` -- the 805 AlpacaEval instructions; ``model_outputs.json`` export only.

Scorers: ``reward`` (a reward model: win rate vs the reference, T-S win rate), ``offline``
(a partial of ``offline.build_offline_scorer``, labelled ``offline:*``), ``judge`` (LLM judge vs
the reference). The T-S win rate is the share of prompts where the teacher's output beats the
evaluated model's under the scorer (ties 1/2), as the PLaD Table 1 header reports it.

``cache_dir`` (``${paths.cache_dir}`` in the suite files; null: off) reuses generations and reward-model
scores across jobs (:mod:`~prefdistill.eval.cache`): a table's jobs share the teacher's outputs and the
scores of the references.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prefdistill.data.records import Prompt
from prefdistill.eval import degeneracy as DG
from prefdistill.eval import exact_match as EM
from prefdistill.eval import metrics as M
from prefdistill.eval.cache import cached
from prefdistill.eval.degeneracy import DegeneracyGuard
from prefdistill.eval.reward import prompt_text

log = logging.getLogger(__name__)

TASKS = ("pairs", "gsm8k", "alpacaeval")
DATA_KEYS = {"source", "name", "path", "split", "max_samples", "single_turn_only", "record_type", "fields",
             "on_bad_row", "with_answer_only"}  # fmt: skip
# After ZeroEval src/templates/OEQA.py: reason, then answer in a JSON block.
GSM8K_TEMPLATE = """## Question:

{question}

## Instruction

Please answer this question by first reasoning and then providing your answer.
Present your reasoning and solution in the following json format.
Please show your final answer in the `answer` field, e.g.,`"answer": "42"`.

```json
{{
    "reasoning": "___",
    "answer": "___"
}}
```
"""


def _last_turn(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


@dataclass
class Example:
    id: str
    prompt: Prompt
    reference: str | None = None
    gold: str | None = None  # GSM8K gold number; the exact-match answer (None: not verifiable)
    dataset: str = ""  # AlpacaEval source subset
    family: str | None = None  # exact-match task family


@dataclass
class EvalSuite:
    name: str
    task: str = "pairs"
    data: dict = field(default_factory=dict)  # DATA_KEYS: source, name, path, split, max_samples, ...
    template: str = "auto"
    backend: str = "hf"
    batch_size: int = 16
    generation: dict = field(default_factory=dict)  # SamplingParams fields
    rouge: bool = True
    exact_match: bool = False  # task pairs: accuracy against the rows' `answer` / `family` fields
    degeneracy: bool = False  # task pairs: answer rate, distinct-2, repeated bigrams, length vs reference
    guard: dict | None = None  # DegeneracyGuard bounds: adds guarded/exact_match (a search's objective)
    teacher_win_rate: bool = True  # generate with the teacher (when there is one) for the T-S win rate
    reward: object | None = None
    offline: Callable | None = None  # partial: offline(model_spec=...) -> scorer
    judge: object | None = None
    n_boot: int = 1000
    seed: int = 0
    n_examples: int = 20  # example generations kept in the results JSON and the W&B table
    cache_dir: str | None = None  # generations and reward-model scores reused across jobs (eval/cache.py)

    def __post_init__(self):
        unknown = set(self.data) - DATA_KEYS
        if unknown:
            raise ValueError(f"eval suite {self.name!r}: unknown data key(s) {sorted(unknown)}; "
                             f"known: {sorted(DATA_KEYS)}")  # fmt: skip
        if self.data.get("with_answer_only") and not self.exact_match:
            raise ValueError(f"eval suite {self.name!r}: data.with_answer_only keeps the prompts exact match "
                             "can grade; it needs exact_match: true")  # fmt: skip
        if self.task not in TASKS:
            raise ValueError(f"eval task must be one of {TASKS}, got {self.task!r}")
        if self.exact_match and self.task != "pairs":
            raise ValueError(f"eval suite {self.name!r}: exact_match needs task 'pairs', got {self.task!r}")
        if self.degeneracy and self.task != "pairs":
            raise ValueError(f"eval suite {self.name!r}: degeneracy needs task 'pairs', got {self.task!r}")
        if self.guard is not None and not (self.degeneracy and self.exact_match):
            raise ValueError(f"eval suite {self.name!r}: guard bounds exact match by the degeneracy metrics; "
                             "it needs exact_match: true and degeneracy: true")  # fmt: skip
        self._guard = DegeneracyGuard(**self.guard) if self.guard is not None else None

    # --- prompts --------------------------------------------------------------------------------
    def load_examples(self) -> list[Example]:
        d = dict(self.data)
        limit = d.get("max_samples")
        if self.task == "gsm8k":
            import datasets

            rows = datasets.load_dataset(
                d.get("path") or "openai/gsm8k", d.get("name") or "main", split=d.get("split", "test")
            )
            rows = list(rows)[:limit] if limit else list(rows)
            return [
                Example(
                    str(i),
                    GSM8K_TEMPLATE.format(question=r["question"]),
                    r["answer"],
                    M.gsm8k_gold(r["answer"]),
                )
                for i, r in enumerate(rows)
            ]
        if self.task == "alpacaeval":
            from prefdistill.eval.alpaca import load_instructions

            rows = load_instructions(d.get("path"))[:limit] if limit else load_instructions(d.get("path"))
            return [Example(str(i), r["instruction"], dataset=r["dataset"]) for i, r in enumerate(rows)]
        return self._load_pairs(d, limit)

    def _load_pairs(self, d: dict, limit: int | None) -> list[Example]:
        from prefdistill.data import load_records

        record_type = d.get("record_type", "pairwise")
        records = load_records(
            d.get("source", "shipped"), d.get("split", "test"), path=d.get("path"), name=d.get("name"),
            record_type=record_type, fields=d.get("fields"), on_bad_row=d.get("on_bad_row", "error"),
        )  # fmt: skip
        truths = EM.load_truths(self._split_file(d)) if self.exact_match else {}
        out = []
        for i, rec in records:
            if d.get("single_turn_only") and not isinstance(rec.prompt, str) and len(rec.prompt) > 1:
                continue
            reference = rec.response if record_type == "sft" else rec.chosen
            rid = rec.id or str(i)
            family, answer = truths.get(rid, (None, None))
            if self.exact_match and rid not in truths:
                raise ValueError(f"{self._split_file(d)}: no row with id {rid!r}: exact match cannot grade it")
            if d.get("with_answer_only") and answer is None:
                continue  # a prompt without a checkable answer (open-ended, polite requests)
            out.append(Example(rid, rec.prompt, reference, gold=answer, family=family))
            if limit and len(out) >= limit:
                break
        return out

    def _split_file(self, d: dict):
        """The jsonl file of the evaluated split (shipped or local data: where the answers are stored)."""
        from pathlib import Path

        from prefdistill.data.loading import shipped_dir, split_slice

        source, (split, _) = d.get("source", "shipped"), split_slice(d.get("split", "test"))
        if source not in ("shipped", "local"):
            raise ValueError(f"eval suite {self.name!r}: exact_match reads the answers from a shipped or "
                             f"local jsonl split, not from data source {source!r}")  # fmt: skip
        root = Path(d["path"]).expanduser() if d.get("path") else shipped_dir(d.get("name"))
        return root if root.is_file() else root / f"{split}.jsonl"

    # --- scoring --------------------------------------------------------------------------------
    def score(
        self,
        examples: Sequence[Example],
        outputs: Sequence[str],
        teacher_outputs: Sequence[str] | None = None,
        *,
        offline_model_spec=None,
    ) -> tuple[dict[str, float], dict, dict[str, list]]:
        """``(metrics, details, per_example)`` for ``outputs`` (one per example, input order)."""
        if len(examples) != len(outputs):
            raise ValueError(f"{len(examples)} examples but {len(outputs)} outputs")
        metrics: dict[str, float] = {"n": len(outputs)}
        details: dict = {}
        per: dict[str, list] = {"word_count": [M.word_count(o) for o in outputs]}
        metrics["word_count"] = sum(per["word_count"]) / max(len(outputs), 1)
        refs = [ex.reference for ex in examples]
        if self.task == "pairs" and self.rouge:
            per.update(M.rouge(outputs, refs))
            metrics.update({k: sum(per[k]) / max(len(outputs), 1) for k in M.ROUGE_KEYS})
        if self.exact_match:
            em, details["exact_match"], per["exact_match"] = EM.score(
                [ex.family for ex in examples], [ex.gold for ex in examples], outputs,
                [ex.prompt for ex in examples], n_boot=self.n_boot, seed=self.seed,
            )  # fmt: skip
            metrics.update(em)
        if self.degeneracy:
            answers = [ex.gold for ex in examples] if self.exact_match else [None] * len(examples)
            degenerate, per_degenerate = DG.score(
                outputs, refs, [ex.family for ex in examples], answers, [_last_turn(ex.prompt) for ex in examples]
            )  # fmt: skip
            metrics.update(degenerate)
            per.update(per_degenerate)
        if self._guard is not None:
            metrics["guarded/exact_match"] = self._guard.guarded_value(metrics["exact_match/overall"], metrics)
            details["guarded/failures"] = self._guard.failures(metrics)
        if self.task == "gsm8k":
            graded = [M.gsm8k_correct(o, ex.gold) for o, ex in zip(outputs, examples)]
            per["correct"] = [c for c, _ in graded]
            metrics["gsm8k/accuracy"] = 100.0 * sum(per["correct"]) / max(len(graded), 1)
            details["gsm8k/extraction"] = {
                h: sum(how == h for _, how in graded) for h in {how for _, how in graded}
            }
        if self.task == "pairs":
            prompts = [ex.prompt for ex in examples]
            scorers = {
                "rm": self.reward,
                "offline": self.offline(model_spec=offline_model_spec) if self.offline else None,
            }
            for key, scorer in scorers.items():
                if scorer is not None:
                    self._score_with(
                        key, scorer, prompts, outputs, refs, teacher_outputs, metrics, details, per
                    )
            if self.judge is not None:
                self._judge(prompts, outputs, refs, metrics, details)
        return metrics, details, per

    def _score_with(
        self, key, scorer, prompts, outputs, refs, teacher_outputs, metrics, details, per
    ) -> None:
        scores = self._scores(scorer, prompts, outputs, refs)
        per[f"{key}/score"] = scores
        metrics[f"{key}/score"] = sum(scores) / max(len(scores), 1)
        details[f"{key}/scorer"] = scorer.name
        if not scorer.uses_reference:  # a similarity to the reference cannot "beat" the reference
            summary = M.win_rate(
                M.outcomes(scores, self._scores(scorer, prompts, refs, refs)), n_boot=self.n_boot, seed=self.seed
            )
            details[f"{key}/vs_reference"] = summary
            metrics[f"{key}/win_rate"] = summary["win_rate"]
        if teacher_outputs is not None:
            teacher_scores = self._scores(scorer, prompts, teacher_outputs, refs)
            per[f"{key}/teacher_score"] = teacher_scores
            summary = M.win_rate(M.outcomes(teacher_scores, scores), n_boot=self.n_boot, seed=self.seed)
            details[f"{key}/teacher_vs_student"] = summary
            metrics[f"{key}/ts_win_rate"] = summary["win_rate"]

    def _scores(self, scorer, prompts, responses, refs) -> list[float]:
        """``scorer.score``, reused from ``cache_dir`` for a scorer with a ``cache_identity`` (a reward model
        folder: the references and the teacher's outputs are scored once for every job of a table)."""
        identity = getattr(scorer, "cache_identity", None)
        if self.cache_dir is None or identity is None:
            return scorer.score(prompts, responses, refs)
        inputs = {"scorer": identity, "prompts": list(prompts), "responses": list(responses),
                  "references": list(refs) if scorer.uses_reference else None}  # fmt: skip
        compute = lambda: scorer.score(prompts, responses, refs)  # noqa: E731
        return cached(self.cache_dir, "scores", inputs, compute, label=scorer.name)

    def _judge(self, prompts, outputs, refs, metrics, details) -> None:
        queries = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
        if self.judge.template.startswith("tldr"):
            queries = [prompt_text(p) for p in prompts]
        summary = self.judge.win_rate(queries, outputs, refs, seed=self.seed, n_boot=self.n_boot)
        details["judge/vs_reference"] = summary
        details["judge/scorer"] = self.judge.name
        metrics["judge/win_rate"] = summary["win_rate"]
        metrics["judge/parse_failures"] = summary["parse_failures"]
        metrics["judge/request_errors"] = summary["request_errors"]

"""PAD's step: n diverse student samples per prompt, scored by the teacher (Gu et al., ACL Findings 2025).

    chain = Chain(PadLists(k=5, n=4, alpha=0.0), sampling=SamplingParams(temperature=1.0, top_p=0.95, seed=0))
    prepared = chain(student_spec, teacher_spec, PromptSource("shipped", "train"), cache_dir="~/.cache/prefdistill")
    dm = PreferenceDataModule(source="local", path=str(prepared.path), record_type="listwise")

Following EganGu/PAD (spec section 4): the chain samples k responses of the student per prompt (on-policy;
the released code at T=1.0, top_p=0.95), this step keeps n by max-min Levenshtein diversity and scores them
with the teacher, ``r_T = alpha * A_T + (1 - alpha) * scores_mcq`` (released ``alpha = 0``), into stage
``pad-lists`` (:mod:`~prefdistill.pipeline.lists`). On several ranks each scores its block of prompts and
rank 0 merges the lists once.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from prefdistill.generation import SamplingParams
from prefdistill.pipeline.lists import build_pad_lists
from prefdistill.pipeline.steps import ChainState, Step, read_samples
from prefdistill.utils import distributed
from prefdistill.utils.atomic import atomic_write_json
from prefdistill.utils.cache import hash_inputs
from prefdistill.utils.jsonl import read_jsonl, write_jsonl

log = logging.getLogger("prefdistill.pipeline")


class PadLists(Step):
    """Stage ``pad-lists``: ``lists.jsonl`` rows ``{id, prompt, responses[n], scores[n] = r_T, scores_mcq,
    scores_logp, scores_avglogp}``.

    ``mcq``: keyword arguments of ``mcq.mcq_list_scores`` (``normalize``, ``both_orders``,
    ``max_response_tokens``). ``mcq_filter``: keep only lists the teacher splits (PAD's filter).
    """

    name, output, samples, sharded = "pad-lists", "lists.jsonl", ("student",), True

    def __init__(self, k: int = 5, n: int = 4, alpha: float = 0.0, scoring_batch_size: int = 8,
                 mcq: dict | None = None, mcq_filter: bool = False):  # fmt: skip
        if n < 2 or k < n:
            raise ValueError(f"need 2 <= n <= k, got n={n}, k={k}")
        self.k, self.n, self.alpha, self.scoring_batch_size = k, n, alpha, scoring_batch_size
        self.mcq, self.mcq_filter = mcq, mcq_filter

    def sampling(self, role: str, params: SamplingParams) -> SamplingParams:
        return SamplingParams(**{**params.to_dict(), "n": self.k})  # k samples of the student per prompt

    def loads(self) -> tuple[str, ...]:
        return ("teacher",)  # it scores

    def _settings(self, state: ChainState) -> dict:
        # the teacher scores with the prompts rendered as they were sampled
        return {"n": self.n, "alpha": self.alpha, "mcq": self.mcq or {}, "mcq_filter": self.mcq_filter,
                "template": state.sampler.template}  # fmt: skip

    def key(self, state: ChainState) -> str | None:
        samples, teacher = state.sample_folders.get("student"), state.model_key("teacher")
        if samples is None or teacher is None:
            return None
        return hash_inputs({"samples": samples, "teacher": teacher, **self._settings(state)})

    def description(self, state: ChainState) -> dict:
        return {"teacher": state.models["teacher"].name_or_path, **self._settings(state)}

    def build(self, state: ChainState, folder: Path) -> None:  # every rank: the teacher scores its prompts
        from prefdistill.models import load_model, load_tokenizer

        data, teacher = state.data, state.models["teacher"]
        rank, world = distributed.rank(), distributed.world_size()
        block = distributed.part(len(data.prompts), rank, world)
        model, tokenizer = load_model(teacher, trainable=False), load_tokenizer(teacher)
        samples = read_samples(state.samples["student"])[block.start : block.stop]
        rows, stats = build_pad_lists(
            model, tokenizer, data.prompts[block.start : block.stop], samples,
            ids=data.ids[block.start : block.stop], n=self.n, alpha=self.alpha, template=state.sampler.template,
            batch_size=self.scoring_batch_size, mcq=self.mcq, mcq_filter=self.mcq_filter,
        )  # fmt: skip
        write_jsonl(folder / f"part-{rank}-of-{world}.jsonl", rows)
        atomic_write_json(folder / f"part-{rank}-of-{world}.json", stats)
        log.info("PAD lists of rank %d of %d (%d prompts): %s", rank, world, len(block), stats)

    def merge(
        self, state: ChainState, folder: Path
    ) -> dict:  # rank 0, once: parts in rank order = prompts in order
        parts = sorted(folder.glob("part-*-of-*.jsonl"), key=lambda p: int(p.name.split("-")[1]))
        rows = [row for p in parts for row in read_jsonl(p)]
        stats: Counter = Counter()
        for p in parts:
            stats.update(json.loads(p.with_suffix(".json").read_text()))
        if not rows:
            raise ValueError(f"PAD: no list survived ({dict(stats)}); nothing to train on")
        write_jsonl(folder / self.output, rows)
        for p in parts:
            p.unlink()
            p.with_suffix(".json").unlink()
        log.info("PAD lists: %s", dict(stats))
        return dict(stats)

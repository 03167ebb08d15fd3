"""PAD data chain: [SFT teacher] -> [SFT student] -> k student samples -> n diverse, teacher-scored lists.

    prepared = prepare_pad_data(student_spec, teacher_spec, PromptSource("shipped", "train"),
                                cache_dir="~/.cache/prefdistill", k=5, n=4, alpha=0.0)
    dm = PreferenceDataModule(source="local", path=str(prepared.path), record_type="listwise")

Defaults follow EganGu/PAD (spec section 4): 5 student samples at T=1.0, top_p=0.95 (on-policy), 4 kept
by max-min Levenshtein diversity, teacher reward ``alpha * A_T + (1 - alpha) * scores_mcq`` with the
released ``alpha = 0``. Every step is a cached stage; the log lists which ran and which were reused. On
several ranks each samples its shards and scores its block of prompts; rank 0 merges the lists once.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

from prefdistill.generation import PromptSource, SamplingParams
from prefdistill.pipeline.lists import build_pad_lists
from prefdistill.pipeline.plad import Prepared, read_jsonl, write_jsonl
from prefdistill.pipeline.stages import Stage, StageResult, summarize
from prefdistill.pipeline.steps import (
    Sampler,
    SFTStep,
    data_key,
    finetuned,
    model_key,
    read_samples,
    sample_stage,
)
from prefdistill.utils import distributed
from prefdistill.utils.atomic import atomic_write_json
from prefdistill.utils.cache import hash_inputs

log = logging.getLogger("prefdistill.pipeline")


def prepare_pad_data(
    student,
    teacher,
    source: PromptSource,
    *,
    cache_dir: str | os.PathLike,
    k: int = 5,
    n: int = 4,
    alpha: float = 0.0,
    sampler: Sampler | None = None,
    sampling: SamplingParams | None = None,
    scoring_batch_size: int = 8,
    mcq: dict | None = None,
    mcq_filter: bool = False,
    sft_student: SFTStep | None = None,
    sft_teacher: SFTStep | None = None,
    seed: int = 0,
) -> Prepared:
    """Run (or reuse) the PAD chain; returns :class:`~prefdistill.pipeline.plad.Prepared` with
    ``path`` = ``lists.jsonl`` (rows: prompt, responses[n], scores[n] = r_T, plus the raw scores).

    ``sampling`` defaults to T=1.0, top_p=0.95, 256 new tokens; its ``n`` is replaced by ``k``.
    ``mcq``: keyword arguments of ``mcq.mcq_list_scores`` (``normalize``, ``both_orders``,
    ``max_response_tokens``). ``mcq_filter``: keep only lists the teacher splits (PAD's filter).
    """
    if n < 2 or k < n:
        raise ValueError(f"need 2 <= n <= k, got n={n}, k={k}")
    base = sampling or SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=256, seed=seed)
    sampling = SamplingParams(**{**base.to_dict(), "n": k})
    stages: list[StageResult] = []
    teacher, sft_t = finetuned("teacher", teacher, sft_teacher, cache_dir)
    student, sft_s = finetuned("student", student, sft_student, cache_dir)
    stages += [r for r in (sft_t, sft_s) if r is not None]
    data = source.load()
    sampler = sampler or Sampler()
    template = sampler.template  # the teacher scores with the prompts rendered as they were sampled
    samples = sample_stage("student", student, data, data_key(data), sampling, sampler, cache_dir)
    stages.append(samples)
    settings = {"n": n, "alpha": alpha, "mcq": mcq or {}, "mcq_filter": mcq_filter, "template": template}
    key = hash_inputs({"samples": samples.path.name, "teacher": model_key(teacher), **settings})

    def score(folder: Path) -> None:  # every rank: the teacher scores its block of prompts
        from prefdistill.models import load_model, load_tokenizer

        rank, world = distributed.rank(), distributed.world_size()
        block = distributed.part(len(data.prompts), rank, world)
        model, tokenizer = load_model(teacher, trainable=False), load_tokenizer(teacher)
        rows, stats = build_pad_lists(
            model, tokenizer, data.prompts[block.start : block.stop], read_samples(samples)[block.start : block.stop],
            ids=data.ids[block.start : block.stop], n=n, alpha=alpha, template=template,
            batch_size=scoring_batch_size, mcq=mcq, mcq_filter=mcq_filter,
        )  # fmt: skip
        write_jsonl(folder / f"part-{rank}-of-{world}.jsonl", rows)
        atomic_write_json(folder / f"part-{rank}-of-{world}.json", stats)
        log.info("PAD lists of rank %d of %d (%d prompts): %s", rank, world, len(block), stats)

    def merge(folder: Path) -> dict:  # rank 0, once: the parts in rank order are the prompts in order
        parts = sorted(folder.glob("part-*-of-*.jsonl"), key=lambda p: int(p.name.split("-")[1]))
        rows = [row for p in parts for row in read_jsonl(p)]
        stats: Counter = Counter()
        for p in parts:
            stats.update(json.loads(p.with_suffix(".json").read_text()))
        if not rows:
            raise ValueError(f"PAD: no list survived ({dict(stats)}); nothing to train on")
        write_jsonl(folder / "lists.jsonl", rows)
        for p in parts:
            p.unlink()
            p.with_suffix(".json").unlink()
        log.info("PAD lists: %s", dict(stats))
        return dict(stats)

    desc = {"teacher": teacher.name_or_path, **settings}
    lists = Stage("pad-lists", key, score, description=desc, sharded=True, finish=merge).run(cache_dir)
    stages.append(lists)
    log.info("PAD data stages:\n%s", summarize(stages))
    return Prepared(lists.path / "lists.jsonl", student, teacher, stages, lists.info or {})

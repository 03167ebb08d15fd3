"""SKD's interleaved sampling: its two limits are the student's own samples and the teacher's, rows are seeded
alone, and the share of replaced proposals is counted.

* top-k = the whole vocabulary: no proposal is ever replaced, so the rollout is exactly the student's sample
  with the same seed (the teacher draws from its own side stream).
* top-k = 1 with a greedy teacher: a kept proposal is the teacher's argmax and a replaced one becomes it, so the
  rollout is exactly the teacher's greedy decoding.
"""

from __future__ import annotations

import dataclasses

import pytest

from prefdistill.generation import SamplingParams
from prefdistill.generation.base import sample_seed
from prefdistill.generation.hf import HFGenerator
from prefdistill.generation.speculative import Speculative, SpeculativeGenerator
from prefdistill.models import load_model

PROMPTS = ["What is the capital of France?", "a b c d e f g h i j k", "hi", "Name the capital city of Japan."]
SAMPLING = SamplingParams(temperature=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def models(peaky_spec):
    teacher_spec = dataclasses.replace(peaky_spec, seed=1)
    return peaky_spec, load_model(peaky_spec, trainable=False), load_model(teacher_spec, trainable=False)


def _speculative(models, **settings) -> SpeculativeGenerator:
    spec, student, teacher = models
    return SpeculativeGenerator(
        spec,
        teacher=teacher,
        speculative=Speculative(**settings),
        model=student,
        batch_size=3,
        progress=False,
    )


def _ids(gen, prompts=PROMPTS, params=SAMPLING, seed=7):
    encoded = [gen.encode(p) for p in prompts]
    return [
        c.token_ids
        for c in gen.complete_ids(encoded, [sample_seed(seed, i, 0) for i in range(len(encoded))], params)
    ]


def test_a_vocabulary_wide_top_k_keeps_every_proposal_the_students_own_sample(models):
    spec, student, _ = models
    own = _ids(HFGenerator(spec, model=student, batch_size=3, progress=False))
    for check in ("proposal", "second_draw"):
        gen = _speculative(models, top_k=student.config.vocab_size, check=check)
        assert _ids(gen) == own
        assert gen.stats() == {"teacher_replaced": 0.0}
    assert len({tuple(t) for t in own}) > 1  # not vacuous


def test_top_1_with_a_greedy_teacher_is_the_teachers_greedy_decoding(models):
    spec, _, teacher = models
    greedy = SamplingParams(temperature=0.0, max_new_tokens=12)
    teacher_greedy = _ids(HFGenerator(spec, model=teacher, batch_size=3, progress=False), params=greedy)
    gen = _speculative(models, top_k=1, teacher_temperature=0.0)
    assert _ids(gen) == teacher_greedy
    assert 0.5 < gen.stats()["teacher_replaced"] <= 1.0  # two unrelated random models: mostly replaced


def test_rollouts_are_seeded_per_row_and_differ_from_both_models(models):
    spec, student, _ = models
    gen = _speculative(models, top_k=20)
    batch = _ids(gen)
    assert _ids(gen) == batch  # reproducible
    alone = [
        c.token_ids for c in gen.complete_ids([gen.encode(PROMPTS[2])], [sample_seed(7, 2, 0)], SAMPLING)
    ]
    assert alone == batch[2:3]  # a row does not depend on its batch-mates
    assert 0.0 < gen.stats()["teacher_replaced"] < 1.0
    assert batch != _ids(HFGenerator(spec, model=student, batch_size=3, progress=False))
    assert _ids(gen, seed=8) != batch


def test_settings_are_checked():
    with pytest.raises(ValueError, match="top_k"):
        Speculative(top_k=0)
    with pytest.raises(ValueError, match="check"):
        Speculative(check="ratio")
    with pytest.raises(ValueError, match="top_p"):
        Speculative(teacher_top_p=0.0)

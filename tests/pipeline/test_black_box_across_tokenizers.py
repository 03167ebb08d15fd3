"""The black-box rows (PLaD, SeqKD, PAD: teacher text only) work with a teacher of another tokenizer.

The teacher is the tiny model on a second tiny tokenizer (the tiny BPE stopped at 400 tokens, so its
embedding has 400 rows: had any stage fed it the student's token ids, ids up to 623 would fail). Each
method runs end to end through ``train()``: the teacher samples (and, for PAD, scores) with its own
tokenizer, and the student trains on the resulting text. A token-level loss refuses the same teacher.
"""

from __future__ import annotations

import math

import pytest

from prefdistill.models.tiny_tokenizer import build
from prefdistill.train import train


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory):
    return str(build(tmp_path_factory.mktemp("tok") / "small", vocab_size=400))


TEACHER = ("teacher=tiny", "pipeline.prepare.sampling.max_new_tokens=8", "data.max_samples=12", "debug=fdr")


@pytest.mark.parametrize("method", ["plad", "seqkd", "pad"])
def test_black_box_methods_distil_a_teacher_with_another_tokenizer(method, other_tokenizer, tiny_cfg):
    cfg = tiny_cfg(f"method={method}", *TEACHER, f"teacher.tokenizer={other_tokenizer}")
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]), metrics


def test_token_level_kd_refuses_that_teacher(other_tokenizer, tiny_cfg):
    cfg = tiny_cfg("method=kd_fkl", "teacher=tiny", f"teacher.tokenizer={other_tokenizer}", "debug=fdr")
    with pytest.raises(ValueError, match="method=uld or method=gold"):
        train(cfg)

"""PAD's MCQ scoring end to end (``build_pad_lists``: diverse lists -> teacher log-likelihood -> pairwise
MCQ questions -> letter probabilities -> scores -> filter -> rows the data module reads), with a
fake-logits teacher: the tiny model whose next-token logits after each MCQ question are set from the two
options it reads in the question (a known quality, times a bias for option A). Covers ``both_orders``,
``mcq_filter`` and the fallback for chat templates without a system role."""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
import torch

from prefdistill.data import load_records
from prefdistill.data.records import ListRecord
from prefdistill.pipeline.lists import build_pad_lists
from prefdistill.pipeline.mcq import MCQ_SYSTEM

BIAS = 1.5  # the fake teacher prefers whatever stands in option A by this factor
OPTIONS = re.compile(r'A\) """(.*?)"""\nB\) """(.*?)"""', re.S)
NO_SYSTEM_TEMPLATE = (  # Gemma-like: a system turn is an error
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def quality(response: str) -> float:
    """The fake teacher's judgement: more words is better."""
    return float(len(response.split()))


@pytest.fixture
def teacher(student_spec):
    """(tiny model with fake MCQ logits, its tokenizer without a system role, the questions it saw)."""
    from prefdistill.models import load_model, load_tokenizer

    tokenizer = copy.deepcopy(load_tokenizer(student_spec))
    tokenizer.chat_template = NO_SYSTEM_TEMPLATE
    model = load_model(student_spec, trainable=False)
    letter = {x: tokenizer.encode(x, add_special_tokens=False)[0] for x in "AB"}
    seen: list[str] = []

    def mcq_logits(module, args, kwargs, output):
        if kwargs.get("logits_to_keep") != 1:  # the log-likelihood pass: leave it alone
            return output
        logits = torch.full_like(output.logits, -1e4)
        for row, (ids, mask) in enumerate(zip(kwargs["input_ids"], kwargs["attention_mask"])):
            text = tokenizer.decode(ids[mask.bool()])
            a, b = OPTIONS.search(text).groups()
            seen.append(text)
            logits[row, -1, letter["A"]] = math.log(BIAS * quality(a))
            logits[row, -1, letter["B"]] = math.log(quality(b))
        output.logits = logits
        return output

    model.register_forward_hook(mcq_logits, with_kwargs=True)
    return model, tokenizer, seen


def p_first_wins(a: float, b: float) -> float:
    """P(option-A response wins) as the fake teacher answers: BIAS*a / (BIAS*a + b)."""
    return BIAS * a / (BIAS * a + b)


def test_two_responses_by_hand(teacher):
    """Qualities 2 ('two words') and 1 ('one'). Asked once, 'two words' in A: P = 1.5*2/(1.5*2 + 1) = 3/4.
    Both orders: 'one' in A wins with 1.5/(1.5 + 2) = 3/7, so P('two words' wins) = (3/4 + 4/7)/2 = 37/56.
    n = 2: p_i = P(i beats the other); scores_mcq = log p (+1e-8 terms)."""
    model, tokenizer, seen = teacher
    samples = [["two words", "one"]]
    once, _ = build_pad_lists(model, tokenizer, ["Q?"], samples, n=2, mcq={"both_orders": False})
    assert [math.exp(s) for s in once[0]["scores_mcq"]] == pytest.approx([3 / 4, 1 / 4], abs=1e-6)
    assert len(seen) == 1
    both, _ = build_pad_lists(model, tokenizer, ["Q?"], samples, n=2, mcq={"both_orders": True})
    assert [math.exp(s) for s in both[0]["scores_mcq"]] == pytest.approx([37 / 56, 19 / 56], abs=1e-6)
    assert len(seen) == 3  # both orders: two more questions
    # the template has no system role: the instructions moved into the one user turn
    assert all(MCQ_SYSTEM in q and "<|im_start|>system" not in q for q in seen)
    assert all(q.index(MCQ_SYSTEM) < q.index("### Query") for q in seen)


def test_lists_filter_and_rows_the_data_module_reads(teacher, tmp_path):
    """Three prompts of k = 4 samples, n = 3 kept: a list of distinct qualities (kept), a list of equal
    qualities (every P(i beats j) = 1/2 with both orders, so every exp(score) > 0.5: mcq_filter drops it),
    and one with too few distinct samples. scores = alpha * A_T + (1 - alpha) * scores_mcq."""
    model, tokenizer, seen = teacher
    prompts = ["First?", "Second?", [{"role": "user", "content": "Third?"}]]
    samples = [
        ["a", "b c d", "e f", "a "],  # 'a ' repeats 'a' once stripped: 3 distinct remain
        ["x y", "z w", "u v", "q r"],  # all two words
        ["same", "same", "same", "other"],
    ]
    rows, stats = build_pad_lists(
        model, tokenizer, prompts, samples, ids=["p1", "p2", "p3"], n=3, alpha=0.25,
        mcq={"both_orders": True}, mcq_filter=True,
    )  # fmt: skip
    assert stats == {"dropped_too_few_distinct": 1, "dropped_mcq_filter": 1, "lists": 1}
    (row,) = rows
    assert row["id"] == "p1" and sorted(row["responses"]) == ["a", "b c d", "e f"]
    q = [quality(r) for r in row["responses"]]
    wins = [
        sum(0.5 * (p_first_wins(q[i], q[j]) + 1 - p_first_wins(q[j], q[i])) for j in range(3) if j != i)
        for i in range(3)
    ]
    assert [math.exp(s) for s in row["scores_mcq"]] == pytest.approx([w / 2 for w in wins], abs=1e-6)
    mixed = [0.25 * a + 0.75 * m for a, m in zip(row["scores_avglogp"], row["scores_mcq"])]
    assert row["scores"] == pytest.approx(mixed)
    assert all(s < 0 for s in row["scores_logp"])  # the real tiny teacher's log-likelihood, untouched
    assert len(seen) == 2 * 3 * 2  # two lists scored, 3 pairs each, both orders

    path = tmp_path / "lists.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ((_, record),) = load_records("local", "train", path=str(path), record_type="listwise")
    assert isinstance(record, ListRecord) and record.scores == pytest.approx(row["scores"])
    best = max(range(3), key=lambda i: q[i])
    assert record.responses[best] == "b c d"

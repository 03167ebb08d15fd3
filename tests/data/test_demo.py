"""The shipped demo datasets: byte-reproducible, split by prompt, short, clean; scored and listwise sets."""

from __future__ import annotations

import json

import pytest

from prefdistill.data import demo, load_records
from prefdistill.data.demo_graded import LIST_SIZES, OPENERS, rouge_l


def _rows(name: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (demo.ASSETS_DIR / name / f"{split}.jsonl").read_text().splitlines()]


def test_regenerating_gives_identical_files(tmp_path):
    for path in demo.write(tmp_path, names=("demo", "demo_lists")):
        assert path.read_bytes() == (demo.ASSETS_DIR / path.parent.name / path.name).read_bytes(), path


def test_regenerating_scored_gives_identical_files(tmp_path):
    pytest.importorskip("rouge_score")
    (path,) = [p for p in demo.write(tmp_path, names=("demo_scored",)) if p.name == "validation.jsonl"]
    assert path.read_bytes() == (demo.ASSETS_DIR / "demo_scored" / path.name).read_bytes()


def test_sizes_and_split_by_prompt():
    prompts = {}
    for split, size in demo.SPLIT_SIZES.items():
        rows = _rows("demo", split)
        assert len(rows) == size
        assert all(r["chosen"] != r["rejected"] for r in rows)
        assert all(len(r["prompt"].split()) <= 30 and len(r["chosen"].split()) <= 20 for r in rows)
        prompts[split] = {r["prompt"] for r in rows}
        assert len(prompts[split]) == size
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["validation"] & prompts["test"]


@pytest.mark.parametrize("split", list(demo.SPLIT_SIZES))
def test_rows_carry_family_and_exact_match_answer(split):
    rows = _rows("demo", split)
    assert all(list(r) == ["id", "prompt", "chosen", "rejected", "family", "answer"] for r in rows)
    assert all(r["family"] == r["id"].split("-")[2] for r in rows)
    assert all((r["answer"] is None) == (r["family"] in ("fact", "summary")) for r in rows)
    if split == "test":  # "Calculate 15 + 3." -> "15 + 3 = 18."
        assert rows[0]["answer"] == "18" and rows[0]["chosen"] == "15 + 3 = 18."
    for r in rows:  # the answer is what the chosen response states
        if r["family"] in ("arith", "convert", "letters"):
            assert r["answer"].isdigit() and r["answer"] in r["chosen"]
        elif r["answer"] is not None:
            assert r["answer"] in r["chosen"]


def test_extra_fields_do_not_change_what_the_readers_see():
    ((_, pair),) = load_records("shipped", "test", limit=1)
    assert (pair.prompt, pair.chosen, pair.rejected, pair.id) == (
        "Calculate 15 + 3.", "15 + 3 = 18.", "15 + 3 = 20.", "test-0000-arith"
    )


def test_task_families_and_rejection_kinds_are_mixed():
    rows = _rows("demo", "train")
    kinds = {r["id"].split("-")[2] for r in rows}
    assert {"arith", "capital", "opposite", "convert", "letters", "fact", "summary"} <= kinds
    rude = sum(r["rejected"] in demo.F.RUDE + demo.F.OFF_TOPIC for r in rows)
    assert 0.25 < rude / len(rows) < 0.55


def test_shipped_source_reads_demo_and_sft_view():
    rows = load_records("shipped", "validation")
    assert len(rows) == 100
    sft = load_records("shipped", "test", record_type="sft")  # the shipped source maps response -> chosen
    first = _rows("demo", "test")[0]
    assert len(sft) == 100 and sft[0][1].response == first["chosen"]


@pytest.mark.parametrize("split", list(demo.SPLIT_SIZES))
def test_demo_scored_is_demo_plus_rouge_l(split):
    scored, pairs = _rows("demo_scored", split), _rows("demo", split)
    assert [{k: v for k, v in r.items() if not k.endswith("_score")} for r in scored] == pairs
    assert all(r["chosen_score"] == 1.0 and 0.0 <= r["rejected_score"] < 1.0 for r in scored)
    rude = [r["rejected"] in demo.F.RUDE + demo.F.OFF_TOPIC for r in scored]
    bad = [r["rejected_score"] for r, is_rude in zip(scored, rude) if is_rude]
    wrong = [r["rejected_score"] for r, is_rude in zip(scored, rude) if not is_rude]
    assert max(bad) <= 0.5 and sum(bad) / len(bad) < 0.1 and sum(wrong) / len(wrong) > 0.6
    if split == "test":
        pytest.importorskip("rouge_score")
        for r in scored[:20]:
            assert rouge_l(r["chosen"])(r["rejected"]) == r["rejected_score"]


@pytest.mark.parametrize("split", list(LIST_SIZES))
def test_demo_lists_are_graded_lists_of_four(split):
    rows, pairs = _rows("demo_lists", split), _rows("demo", split)
    by_id = {r["id"]: r for r in pairs}
    assert len(rows) == LIST_SIZES[split] and len({r["prompt"] for r in rows}) == len(rows)
    for r in rows:
        assert set(r) == {"id", "prompt", "responses", "scores"} and r["prompt"] == by_id[r["id"]]["prompt"]
        assert len(r["responses"]) == len(set(r["responses"])) == 4
        assert len(r["scores"]) == len(set(r["scores"])) == 4  # no ties
        ranked = [resp for _, resp in sorted(zip(r["scores"], r["responses"]), reverse=True)]
        assert ranked[0] in {o + by_id[r["id"]]["chosen"] for o in OPENERS}
        assert ranked[3] in demo.F.RUDE + demo.F.OFF_TOPIC
        assert all(len(x.split()) <= 25 for x in r["responses"])
    best = [r["responses"].index(max(zip(r["scores"], r["responses"]))[1]) for r in rows]
    assert len(set(best)) == 4  # the best response is not always in the same position


def test_shipped_name_picks_the_dataset_and_unknown_lists_them():
    from prefdistill.data import DataError

    ((_, pair),) = load_records("shipped", "test", name="demo_scored", limit=1)
    assert pair.scored and pair.chosen_score == 1.0
    ((_, lst),) = load_records("shipped", "test", name="demo_lists", record_type="listwise", limit=1)
    assert len(lst.responses) == 4
    ((_, best),) = load_records("shipped", "test", name="demo_lists", record_type="pairwise", limit=1)
    assert best.chosen_score == max(lst.scores) and best.rejected_score == min(lst.scores)
    with pytest.raises(DataError, match=r"no shipped dataset 'nope'.*'demo_lists'"):
        load_records("shipped", "test", name="nope")


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_demo_correctness_pairs_differ_only_in_being_right(split):
    from prefdistill.eval.exact_match import is_correct

    pairs, rows = _rows("demo_correctness", split), {r["id"]: r for r in _rows("demo", split)}
    assert pairs and len(pairs) == sum(r["answer"] is not None for r in rows.values())
    for pair in pairs:
        row = rows[pair["id"]]
        assert (pair["prompt"], pair["chosen"], pair["family"], pair["answer"]) == (
            row["prompt"], row["chosen"], row["family"], row["answer"]
        )  # fmt: skip
        assert is_correct(pair["family"], pair["chosen"], pair["answer"], pair["prompt"]), pair
        assert not is_correct(pair["family"], pair["rejected"], pair["answer"], pair["prompt"]), pair
        assert pair["rejected"].split()[:3] == pair["chosen"].split()[:3], pair  # same sentence, other answer


def test_regenerating_correctness_gives_identical_files(tmp_path):
    for path in demo.write(tmp_path, names=("demo_correctness",)):
        assert path.read_bytes() == (demo.ASSETS_DIR / path.parent.name / path.name).read_bytes(), path

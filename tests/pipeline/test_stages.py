"""Cached stages: a finished stage is reused without running; an unfinished folder never is."""

from __future__ import annotations

import pytest

from prefdistill.pipeline.stages import MARKER, Stage
from prefdistill.utils.cache import hash_inputs


def _counting(calls: list, text: str = "out"):
    def fn(folder):
        calls.append(sorted(p.name for p in folder.iterdir()))
        (folder / "data.txt").write_text(text)
        return {"rows": 1}

    return fn


def test_second_run_reuses_without_calling_fn(tmp_path):
    calls: list = []
    stage = Stage("pairs", hash_inputs({"a": 1}), _counting(calls))
    first, second = stage.run(tmp_path), stage.run(tmp_path)
    assert (first.status, second.status) == ("ran", "reused")
    assert len(calls) == 1 and second.info == {"rows": 1}
    assert first.path == tmp_path / "stages" / f"pairs-{hash_inputs({'a': 1})}"
    assert (first.path / MARKER).is_file()


def test_other_inputs_get_another_folder(tmp_path):
    calls: list = []
    a = Stage("pairs", hash_inputs({"a": 1}), _counting(calls)).run(tmp_path)
    b = Stage("pairs", hash_inputs({"a": 2}), _counting(calls)).run(tmp_path)
    assert a.path != b.path and len(calls) == 2
    assert hash_inputs({"x": 1, "y": 2}) == hash_inputs({"y": 2, "x": 1})


def test_a_config_node_and_its_plain_container_are_one_key():
    """The reward-model stage got its recipe as a DictConfig from one entry (a pipeline scorer) and as a dict
    from another (the eval suite, _convert_=all): both must find the same folder."""
    from omegaconf import OmegaConf

    recipe = {"data": {"source": "shipped", "splits": {"train": "train"}}, "steps": [1, 2], "lr": 3e-4}
    node = OmegaConf.create(recipe)
    assert hash_inputs({"reward": node}) == hash_inputs({"reward": recipe})
    assert hash_inputs({"reward": node.data}) == hash_inputs({"reward": recipe["data"]})
    assert hash_inputs({"reward": node}) != hash_inputs({"reward": {**recipe, "lr": 1e-4}})


def test_half_written_folder_is_not_reused_and_is_cleared(tmp_path):
    calls: list = []
    stage = Stage("lists", "abc", _counting(calls))
    folder = stage.folder(tmp_path)
    folder.mkdir(parents=True)
    (folder / "partial.jsonl").write_text('{"half"')  # a killed run's output, no marker
    result = stage.run(tmp_path)
    assert result.status == "ran" and calls == [[]]  # started from an empty folder
    assert not (folder / "partial.jsonl").exists()


def test_resumable_stage_keeps_partial_output(tmp_path):
    calls: list = []
    stage = Stage("samples", "abc", _counting(calls), resumable=True)
    stage.folder(tmp_path).mkdir(parents=True)
    (stage.folder(tmp_path) / "shard-00000.jsonl").write_text("{}\n")
    assert stage.run(tmp_path).status == "ran"
    assert calls == [["shard-00000.jsonl"]]


def test_failed_stage_writes_no_marker(tmp_path):
    def boom(folder):
        (folder / "data.txt").write_text("half")
        raise RuntimeError("killed")

    stage = Stage("pairs", "abc", boom)
    with pytest.raises(RuntimeError):
        stage.run(tmp_path)
    assert not (stage.folder(tmp_path) / MARKER).exists()
    calls: list = []
    assert Stage("pairs", "abc", _counting(calls)).run(tmp_path).status == "ran"

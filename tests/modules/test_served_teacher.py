"""A served teacher: a loopback server with a tiny model's real log-probs gives the local teacher's KD, and
the client's failures (unreachable, fewer log-probs, another vocabulary, transient errors) are clear."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_helpers import CONFIGS

from prefdistill.models import load_model, load_tokenizer
from prefdistill.models.logprob_server import LogprobServer
from prefdistill.models.served import ServedTeacher, ServedTeacherError
from prefdistill.modules.on_policy import OnPolicy
from prefdistill.modules.teacher_cache import same_vocabulary_topk
from prefdistill.modules.teacher_formats import TeacherFormat
from prefdistill.modules.teachers import served_table

TINY = instantiate(OmegaConf.load(CONFIGS / "model" / "tiny.yaml"))
TEACHER = dataclasses.replace(TINY, seed=1)
SFT_ROWS = {"record_type": "sft", "val_fraction": 0.0}
K = 16


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TINY)


@pytest.fixture(scope="module")
def server(tokenizer):
    with LogprobServer(load_model(TEACHER, trainable=False), tokenizer, "tiny-teacher") as running:
        yield running


def _first_loss(fit, module, dm) -> float:
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    fit(module, dm, steps=1, callbacks=[Record()])
    return losses[0]


@pytest.fixture
def make(tiny_module):
    """A DistillModule of ``teacher`` with top-K tables (kd_fkl unless ``loss`` is given)."""
    return lambda teacher, loss="kd_fkl", **kw: tiny_module(loss, teacher=teacher, teacher_topk=K, **kw)


@pytest.mark.parametrize("support", ["topk", "topk_tail"])
def test_served_table_is_the_local_teachers_table(server, tokenizer, support, tiny_data):
    dm = tiny_data(**SFT_ROWS)
    fmt = TeacherFormat(support, K)
    served = served_table(
        ServedTeacher(server.url, batch_size=3), dm.loader("train"), "chosen", fmt, tokenizer
    )
    local = same_vocabulary_topk(load_model(TEACHER, trainable=False), dm.loader("train"), "chosen", fmt)
    assert served.keys() == local.keys() == set(fmt.fields)
    assert served["logps"].dtype == torch.float16 and served["ids"].dtype == torch.int32
    for key in ("index", "offsets", "ids"):
        torch.testing.assert_close(served[key], local[key], atol=0, rtol=0)
    for key in set(fmt.fields) - {"index", "offsets", "ids"}:  # float16 values of float32 log-probs
        torch.testing.assert_close(served[key].float(), local[key].float(), atol=2e-3, rtol=1e-3)


def test_kd_against_the_server_equals_kd_against_the_same_model_loaded_locally(
    server, tmp_path, tiny_data, make, fit
):
    dm = tiny_data(**SFT_ROWS)
    served = make(ServedTeacher(server.url))
    assert served.teacher is None and not served.teacher_models  # no weights held
    local = make(TEACHER, teacher_cache=str(tmp_path))  # the same top-k path, from the local model
    before = server.requests
    got, expected = _first_loss(fit, served, dm), _first_loss(fit, local, dm)
    assert server.requests > before
    assert got == pytest.approx(expected, abs=1e-4)
    online = _first_loss(
        fit, make(TEACHER), dm
    )  # full logits: top-16 of 624 differs by 4 %, 9x the tolerance
    assert abs(online - expected) > 9e-4


def test_on_policy_rollouts_ask_the_server_per_batch(server, tiny_data, make, fit):
    module = make(
        ServedTeacher(server.url), loss="kd_rkl", on_policy=OnPolicy(fraction=1.0, max_new_tokens=6)
    )
    before = server.requests
    trainer = fit(module, tiny_data(**SFT_ROWS))
    assert server.requests - before == 2  # one request (4 rollouts <= batch_size) per step
    assert torch.isfinite(torch.tensor(float(trainer.callback_metrics["train/loss"])))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_named_after_the_retries(caplog):
    teacher = ServedTeacher(f"http://127.0.0.1:{_closed_port()}/v1", max_retries=2, backoff_s=0.01)
    with pytest.raises(ServedTeacherError, match=r"unreachable: 3 tries of /models failed.*teacher.url"):
        teacher.model_name()
    assert caplog.text.count("try ") == 3


class Flaky(LogprobServer):
    """Fails the first ``failures`` completions with HTTP 503, optionally drops log-probs."""

    failures, keep = 0, None

    def respond(self, payload):
        if self.failures:
            self.failures -= 1
            self.requests += 1
            return 503, {"error": {"message": "warming up"}}
        status, body = super().respond(payload)
        if self.keep is not None:
            for choice in body["choices"]:
                choice["prompt_logprobs"] = [None] + [
                    dict(list(e.items())[: self.keep]) for e in choice["prompt_logprobs"][1:]
                ]
        return status, body


@pytest.fixture
def flaky(tokenizer):
    with Flaky(load_model(TEACHER, trainable=False), tokenizer, "tiny-teacher") as running:
        yield running


def test_transient_errors_are_retried_with_backoff_and_bad_requests_are_not(flaky, tokenizer):
    sequence = tokenizer("hello there, a short prompt")["input_ids"]
    flaky.failures = 2
    teacher = ServedTeacher(flaky.url, max_retries=2, backoff_s=0.01)
    ((values, ids, own),) = teacher.topk([sequence], K, tokenizer)
    assert values.shape == ids.shape == (len(sequence) - 1, K) and own.shape == (len(sequence) - 1,)
    assert flaky.requests == 3
    with pytest.raises(ServedTeacherError, match="HTTP 400: .*prompt_logprobs must be 0..64"):
        teacher.topk([sequence], 65, tokenizer)
    assert flaky.requests == 4  # no retry
    flaky.failures = 5
    with pytest.raises(ServedTeacherError, match="unreachable: 3 tries of /completions .*HTTP 503"):
        teacher.topk([sequence], K, tokenizer)


def test_fewer_log_probs_than_asked_is_an_error(flaky, tokenizer):
    flaky.keep = 3
    with pytest.raises(
        ServedTeacherError, match=r"returned 3 log-probs at prompt position 1, 16 asked.*--max-logprobs 16"
    ):
        ServedTeacher(flaky.url).topk([tokenizer("a prompt")["input_ids"]], K, tokenizer)


def test_a_server_of_another_vocabulary_is_refused(tokenizer):
    class Shifted:  # the same model behind a tokenizer whose ids mean other text
        def decode(self, ids):
            return tokenizer.decode([(i + 1) % len(tokenizer) for i in ids])

    with LogprobServer(load_model(TEACHER, trainable=False), Shifted(), "other") as other:
        sequence = tokenizer("the capital of France is Paris")["input_ids"]
        with pytest.raises(ServedTeacherError, match="tokenizes differently from the student's tokenizer"):
            ServedTeacher(other.url).topk([sequence], K, tokenizer)
        with pytest.raises(
            ServedTeacherError, match="does not serve 'tiny-teacher'; it serves \\['other'\\]"
        ):
            ServedTeacher(other.url, model="tiny-teacher").model_name()


def test_served_teacher_settings_are_checked(make):
    with pytest.raises(ValueError, match="http"):
        ServedTeacher("127.0.0.1:8000")
    with pytest.raises(ValueError, match="batch_size >= 1"):
        ServedTeacher("http://127.0.0.1:1/v1", batch_size=0)
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR is not set"):
        ServedTeacher("http://127.0.0.1:1/v1", api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(ValueError, match="draws from the full distribution"):
        make(ServedTeacher("http://127.0.0.1:1/v1"), teacher_support="sampled")


def test_train_py_with_a_served_teacher_and_its_preflight(server, tiny_cfg):
    from train_helpers import assert_sane_losses

    from prefdistill.preflight import PreflightError
    from prefdistill.train import train

    cfg = tiny_cfg("method=kd_fkl", "teacher=served", f"teacher.url={server.url}", "module.teacher_topk=16")
    before = server.requests
    assert_sane_losses(train(cfg), cfg.paths.output_dir)
    assert server.requests > before
    assert not (Path(cfg.paths.output_dir) / "teacher_spec.json").exists()  # a server: nothing to rebuild
    down = f"teacher.url=http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(PreflightError, match="teacher: teacher server .* unreachable"):
        train(tiny_cfg("method=kd_fkl", "teacher=served", down))

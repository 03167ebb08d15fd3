"""DeepSpeed ZeRO-2 and ZeRO-3 on two CPU ranks (``hardware=deepspeed_cpu trainer.devices=2``, gloo) against
one rank: the same training curve, held-out metrics and final weights, and the reference log-probs computed
once, half on each rank.

Why one rank with batch 4 and two with batch 2 must agree, and the tolerance, see ``test_ddp_pairwise.py``;
DeepSpeed averages the ranks' gradients as DDP does and clips the norm of the whole (partitioned) gradient.
Under ZeRO-3 every forward gathers parameters from both ranks, so the cache pass and the held-out split must
give both ranks the same number of batches (``ShardBatches``), or one rank would wait for the other forever.
"""

from __future__ import annotations

import pytest
import torch
from ranks_helpers import assert_cached_once_by_two_ranks, assert_same_training, launch

pytest.importorskip("deepspeed")

pytestmark = pytest.mark.slow

TOL = {"rel": 1e-5, "abs": 1e-5}


def _weights(folder) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_two_ranks_follow_one_rank(tmp_path, stage):
    zero = ["hardware=deepspeed_cpu", f"trainer.strategy.stage={stage}", "logger=csv"]
    one = launch(tmp_path / "one", "one", *zero, "data.batch_size=4")
    two = launch(tmp_path, "two", *zero, "trainer.devices=2", "data.batch_size=2")
    assert_same_training(one, two, **TOL)
    for split in ("validation", "train"):
        label = rf"reference log-probs \[{split}\]"
        assert_cached_once_by_two_ranks(two.log, label)
    a, b = _weights(one.folder / "model"), _weights(two.folder / "model")  # ZeRO-3: gathered from both ranks
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)

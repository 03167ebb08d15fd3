"""build_optimizer: one config node (configs/module/auto.yaml) builds AdamW or RMSprop."""

from __future__ import annotations

import pytest
import torch

from prefdistill.modules.optim import build_optimizer


def _param() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


def test_adamw_takes_betas():
    opt = build_optimizer(_param(), name="adamw", lr=1e-3, weight_decay=0.1, betas=[0.8, 0.9])
    assert type(opt) is torch.optim.AdamW
    group = opt.param_groups[0]
    assert group["betas"] == (0.8, 0.9) and group["lr"] == 1e-3 and group["weight_decay"] == 0.1


def test_rmsprop_ignores_betas_and_keeps_torch_defaults():
    opt = build_optimizer(_param(), name="rmsprop", lr=1e-6, betas=[0.9, 0.999])
    assert type(opt) is torch.optim.RMSprop
    group = opt.param_groups[0]
    assert group["lr"] == 1e-6 and group["alpha"] == 0.99 and group["momentum"] == 0
    assert "betas" not in group


def test_unknown_optimizer_names_the_known_ones():
    with pytest.raises(ValueError, match="rmsprop"):
        build_optimizer(_param(), name="adam", lr=1e-3)

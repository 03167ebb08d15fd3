"""The process's random generators (torch, Python, numpy) as one checkpointable value, and back.

Plain Python values and tensors only, so checkpoints load with ``weights_only=True``.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """torch's, Python's and numpy's generator states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))

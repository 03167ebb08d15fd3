"""The forward of a pair batch's responses, shared by the pairwise and the unpaired modules.

``forward="shared_prompt"`` (``auto``): one packed ``[prompt, chosen, rejected]`` sequence per pair, the prompt
computed once (``prefdistill.models.packing``, which falls back to the padded path, with a warning, for models
whose attention cannot take its mask); ``"padded"``: ``[chosen; rejected]`` right-padded rows. A batch with one
side (SFT; unpaired rows without a mismatched completion) always takes the padded path. The unpaired module
runs its rows through the same code as pairs: ``chosen`` = the completion, ``rejected`` = the mismatched one.
"""

from __future__ import annotations

import torch

from prefdistill.models import response_logps
from prefdistill.models.packing import shared_prompt_logps

SIDES = ("chosen", "rejected")
FORWARD_MODES = ("padded", "shared_prompt")


def forward_mode(setting: str) -> str:
    """``module.forward`` as a mode: ``auto`` is ``shared_prompt``; anything else must be one of FORWARD_MODES."""
    mode = "shared_prompt" if setting == "auto" else setting
    if mode not in FORWARD_MODES:
        raise ValueError(f"forward must be one of {FORWARD_MODES}, got {setting!r}")
    return mode


class PairForward:
    """Mixin: ``sequence_logps`` of a pair batch with the module's ``forward_mode`` and ``chunk_size``."""

    forward_mode: str
    chunk_size: int

    @staticmethod
    def present_sides(batch) -> tuple[str, ...]:
        return tuple(s for s in SIDES if f"{s}_input_ids" in batch)

    @staticmethod
    def concat(batch, sides) -> list[torch.Tensor]:
        """``[input_ids, attention_mask, labels]`` of ``sides`` stacked as rows (``[chosen; rejected]``)."""
        return [
            torch.cat([batch[f"{s}_{k}"] for s in sides]) for k in ("input_ids", "attention_mask", "labels")
        ]

    def sequence_logps(self, model, batch, sides=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(sides)*B,) summed response log-probs (fp32) and token counts of ``sides`` (default: the sides the
        batch has), in one forward (see the module docstring)."""
        sides = self.present_sides(batch) if sides is None else tuple(sides)
        if self.forward_mode == "shared_prompt" and sides == SIDES:
            return shared_prompt_logps(model, batch, chunk_size=self.chunk_size)
        return response_logps(model, *self.concat(batch, sides), chunk_size=self.chunk_size)

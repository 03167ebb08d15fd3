"""Next-token logits of the response positions only: (B, R, V) instead of (B, T, V).

Token-level distillation compares teacher and student at response positions, but a full forward returns
logits for every position: prompt and padding included, ``T·V`` floats per row (49k-262k per position).
:func:`response_index` lists each row's response positions left-aligned (``R`` = the longest response of the
batch) and :func:`response_logits` runs the backbone, gathers those hidden states and applies the lm_head to
them alone (``prefdistill/models/logprobs.py`` finds backbone and head; a model without that generic split
falls back to full logits, then gathered). Teacher tables, the cross-tokenizer spans and the losses index
positions by order within the mask, so they read the compact layout as they read the full one.
"""

from __future__ import annotations

import torch

from prefdistill.models.logprobs import backbone_hidden


def response_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index (B, R) long, compact mask (B, R) bool)``: row b's response positions first, in order; the
    slots past its count point at non-response positions and are masked out."""
    counts = mask.sum(-1)
    width = max(int(counts.max()), 1) if len(counts) else 1
    index = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)[:, :width]
    return index, torch.arange(width, device=mask.device) < counts[:, None]


def gather_rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t`` (B, T, ...) at ``index`` (B, R) along dim 1."""
    shape = (*index.shape, *t.shape[2:])
    return t.gather(1, index.reshape(*index.shape, *([1] * (t.dim() - 2))).expand(shape))


def response_logits(
    model, batch: dict, side: str, index: torch.Tensor, vocab_limit: int | None = None
) -> torch.Tensor:
    """(B, R, V) float32 logits at the positions ``index`` of one side's next-token predictions."""
    ids, attention = batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"]
    parts = backbone_hidden(model, ids, attention)
    if parts is None:
        return gather_rows(
            model(input_ids=ids, attention_mask=attention).logits[:, :-1, :vocab_limit], index
        ).float()
    hidden, head, softcap = parts
    logits = head(gather_rows(hidden[:, :-1], index)).float()[..., :vocab_limit]
    return torch.tanh(logits / softcap) * softcap if softcap else logits

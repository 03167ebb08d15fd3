"""Shared-prompt packed forward: each pair is one sequence ``[prompt, chosen, rejected]``.

A padded pair batch (``prefdistill.data.collate``: ``{chosen,rejected}_{input_ids,attention_mask,labels}``,
chosen and rejected of one example sharing the prompt ids) is repacked so the prompt is computed once
per pair instead of twice, and no compute goes to the padding between a short and a long response:

* tokens ``[prompt (p), chosen response (c), rejected response (r)]``, no padding inside a pair;
* ``position_ids`` ``0..p-1, p..p+c-1, p..p+r-1``: rejected positions restart at the prompt end;
* a 4D attention mask, causal within a pair, where prompt tokens see the prompt, chosen tokens see
  prompt + chosen, and rejected tokens see prompt + rejected (never chosen); pairs never see each other;
* the first rejected token is predicted from the last *prompt* hidden state (not the last chosen one),
  so each supervised token is scored from an explicit gather index, not by a plain shift.

Layouts (``layout=``): ``"rows"`` (default) puts one pair per row, right-padded to the longest pair of the
batch (padding only the difference between pair lengths; the attention mask is (B, 1, Lp, Lp));
``"flat"`` concatenates all pairs into one (1, L) padding-free row with a block-diagonal mask. Both give
the same numbers. On CPU there is no varlen attention kernel, so the flat layout's dense (L x L) mask
makes attention cost grow with the square of the batch (masked blocks are still computed, and the mask
itself is L^2); "rows" avoids that, which is why it is the default. (Measured on SmolLM2-135M, TL;DR-like
pairs, batch 2, 2-core CPU: padded 55-63 s vs "rows" 25-29 s per forward+backward; "flat" was not
timed there -- it is tested for equality only.)

Why a 4D mask and not KV-cache reuse (prompt forward with ``use_cache=True``, then the chosen and
rejected continuations against the repeated cache): the mask gives one backbone call over all unique
tokens, lets every transformers attention backend that takes a prepared mask (``sdpa``, ``eager``) run
it unchanged, and needs no cache expansion or second call per layer; gradients through the shared
prompt states are exact in both. Attention over masked blocks is wasted work, but at these lengths the
attention score FLOPs are a small fraction of the linear layers'.

transformers (5.x, ``masking_utils._preprocess_mask_arguments``) returns a 4D mask as-is. Per family
(``FAMILIES``): ``plain`` (llama, gpt2) takes one mask; ``window`` (mistral) uses one mask for every
layer, so its ``sliding_window`` is applied to it (distance in positions); ``layer_dict`` (gemma2,
gemma3_text, qwen2) takes ``{"full_attention": m, "sliding_attention": m_window}``; ``physical_window``
(gpt_neo) applies its local window inside the attention on physical offsets, which the packing changes,
so it is exact only while a packed pair fits in ``window_size`` (else that batch falls back). ``sdpa``
gets a boolean mask, ``eager`` an additive one. Other families, or ``flash_attention_*``/``flex``
backends, fall back to the padded path with a one-time WARNING naming the model type.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from prefdistill.models.logprobs import (
    IGNORE_INDEX,
    _backbone_and_head,
    _unwrap,
    backbone_hidden,
    chunked_logps,
    response_logps,
)

log = logging.getLogger(__name__)

FAMILIES: dict[str, str] = {
    "llama": "plain",
    "gpt2": "plain",
    "mistral": "window",
    "gemma2": "layer_dict",
    "gemma3_text": "layer_dict",
    "qwen2": "layer_dict",
    "gpt_neo": "physical_window",
}
ATTN_IMPLS = ("sdpa", "eager")
LAYOUTS = ("rows", "flat")
DEFAULT_LAYOUT = "rows"
PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3
_warned: set[str] = set()


def _config(model):
    return getattr(_unwrap(model), "config", None)


def shared_prompt_support(model) -> str | None:
    """None when ``model`` can run the shared-prompt forward, else why it cannot (for the warning)."""
    config = _config(model)
    model_type = getattr(config, "model_type", None)
    if _backbone_and_head(model) is None:
        return "no generic backbone/lm_head"
    if model_type not in FAMILIES:
        return "its attention is not verified to take a custom 4D block mask"
    impl = getattr(config, "_attn_implementation", None)
    if impl not in ATTN_IMPLS:
        return f"attention implementation {impl!r} takes no custom 4D mask (use sdpa or eager)"
    return None


def _warn_fallback(model, reason: str) -> None:
    model_type = getattr(_config(model), "model_type", type(_unwrap(model)).__name__)
    key = f"{model_type}:{reason}"
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "shared-prompt forward unavailable for model type %r: %s; falling back to separate padded "
            "forwards of [chosen; rejected] (the prompt is computed twice)",
            model_type,
            reason,
        )


@dataclass
class PackedPairs:
    """A pair batch repacked as ``[prompt, chosen, rejected]`` sequences (see the module docstring)."""

    input_ids: Tensor  # (R, L)
    position_ids: Tensor  # (R, L)
    segment: Tensor  # (R, L) pair index within the batch, -1 on padding
    part: Tensor  # (R, L) PROMPT / CHOSEN / REJECTED / PAD
    source: Tensor  # (M,) flat index (row * L + col) of the hidden state predicting each supervised token
    targets: Tensor  # (M,) token ids to score
    owner: Tensor  # (M,) output slot: b for chosen of pair b, B + b for its rejected
    num_outputs: int  # 2B
    max_pair_len: int


def _first_label(labels: Tensor) -> Tensor:
    """(B,) index of the first supervised label per row (T when none)."""
    sup = labels != IGNORE_INDEX
    idx = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    return torch.where(sup, idx, labels.shape[1]).min(dim=1).values


def pack_pairs(batch: dict, layout: str = DEFAULT_LAYOUT) -> PackedPairs | str:
    """Repack a padded pair batch; returns a reason string when the batch cannot be shared-prompt packed."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    c_ids, c_mask, c_lab = (batch[f"chosen_{k}"] for k in ("input_ids", "attention_mask", "labels"))
    r_ids, r_mask, r_lab = (batch[f"rejected_{k}"] for k in ("input_ids", "attention_mask", "labels"))
    n, device = c_ids.shape[0], c_ids.device
    p_c, p_r = _first_label(c_lab).tolist(), _first_label(r_lab).tolist()
    c_len, r_len = c_mask.sum(1).tolist(), r_mask.sum(1).tolist()
    pairs = []  # per pair: (ids, positions, parts, labels-in-packed-order, predictor offsets)
    for b in range(n):
        p = p_c[b]
        if p != p_r[b] or p < 1 or p >= c_len[b] or p >= r_len[b]:
            return "a pair without a prompt, a response, or with differently long prompts"
        if not torch.equal(c_ids[b, :p], r_ids[b, :p]):
            return "chosen and rejected prompts differ"
        c, r = c_len[b] - p, r_len[b] - p
        ids = torch.cat([c_ids[b, : p + c], r_ids[b, p : p + r]])
        pos = torch.cat([torch.arange(p + c), torch.arange(p, p + r)])
        part = torch.cat([torch.full((p,), PROMPT), torch.full((c,), CHOSEN), torch.full((r,), REJECTED)])
        # Offsets (within the pair) of the hidden states that predict each response token.
        pred_c = torch.arange(p - 1, p + c - 1)
        pred_r = torch.cat([torch.tensor([p - 1]), torch.arange(p + c, p + c + r - 1)])
        lab_c, lab_r = c_lab[b, p : p + c].cpu(), r_lab[b, p : p + r].cpu()
        pairs.append((ids, pos, part, (pred_c, lab_c), (pred_r, lab_r)))
    lengths = [len(x[0]) for x in pairs]
    if layout == "rows":
        rows, width, starts = n, max(lengths), [(b, 0) for b in range(n)]
    else:
        rows, width = 1, sum(lengths)
        offsets = torch.tensor([0] + lengths[:-1]).cumsum(0).tolist()
        starts = [(0, o) for o in offsets]
    input_ids = torch.zeros(rows, width, dtype=c_ids.dtype)
    position_ids = torch.zeros(rows, width, dtype=torch.long)
    segment = torch.full((rows, width), -1, dtype=torch.long)
    part = torch.full((rows, width), PAD, dtype=torch.long)
    source, targets, owner = [], [], []
    for b, ((ids, pos, prt, (pred_c, lab_c), (pred_r, lab_r)), (row, off)) in enumerate(zip(pairs, starts)):
        sl = slice(off, off + len(ids))
        input_ids[row, sl], position_ids[row, sl], segment[row, sl], part[row, sl] = ids.cpu(), pos, b, prt
        for pred, lab, slot in ((pred_c, lab_c, b), (pred_r, lab_r, n + b)):
            keep = lab != IGNORE_INDEX
            source.append(row * width + off + pred[keep])
            targets.append(lab[keep])
            owner.append(torch.full((int(keep.sum()),), slot, dtype=torch.long))
    return PackedPairs(
        input_ids=input_ids.to(device),
        position_ids=position_ids.to(device),
        segment=segment.to(device),
        part=part.to(device),
        source=torch.cat(source).to(device),
        targets=torch.cat(targets).to(device),
        owner=torch.cat(owner).to(device),
        num_outputs=2 * n,
        max_pair_len=max(lengths),
    )


def block_mask(packed: PackedPairs, window: int | None = None) -> Tensor:
    """(R, 1, L, L) bool, True = may attend: causal within a pair, rejected never sees chosen.

    ``window``: also require ``position_q - position_k < window`` (sliding-window layers). Padding
    tokens attend only to themselves (no fully masked rows).
    """
    seg, part, pos = packed.segment, packed.part, packed.position_ids
    length = seg.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seg.device).tril()
    allowed = causal & (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] >= 0)
    allowed &= ~((part[:, :, None] == REJECTED) & (part[:, None, :] == CHOSEN))
    if window is not None:
        allowed &= (pos[:, :, None] - pos[:, None, :]) < window
    eye = torch.eye(length, dtype=torch.bool, device=seg.device)
    allowed |= eye & (seg < 0)[:, :, None]
    return allowed[:, None]


def _as_backend_mask(allowed: Tensor, impl: str, dtype: torch.dtype) -> Tensor:
    if impl == "sdpa":
        return allowed
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def _attention_mask(model, packed: PackedPairs) -> Tensor | dict | str:
    """What the backbone's ``attention_mask`` argument gets, or a reason to fall back."""
    config = _config(model)
    family = FAMILIES[config.model_type]
    impl = config._attn_implementation
    dtype = next(_unwrap(model).parameters()).dtype
    window = getattr(config, "sliding_window", None)
    if family == "physical_window":
        local = "local" in getattr(config, "attention_layers", [])
        if local and packed.max_pair_len > config.window_size:
            return f"a packed pair ({packed.max_pair_len} tokens) exceeds its local window ({config.window_size})"
        if packed.input_ids.shape[1] > config.max_position_embeddings:
            return "the packed row exceeds max_position_embeddings"
        return _as_backend_mask(block_mask(packed), impl, dtype)
    if family == "window":
        return _as_backend_mask(block_mask(packed, window), impl, dtype)
    full = _as_backend_mask(block_mask(packed), impl, dtype)
    if family == "plain":
        return full
    sliding = full if window is None else _as_backend_mask(block_mask(packed, window), impl, dtype)
    return {"full_attention": full, "sliding_attention": sliding}


def _padded(model, batch: dict, chunk_size: int) -> tuple[Tensor, Tensor]:
    keys = ("input_ids", "attention_mask", "labels")
    ids, mask, labels = (torch.cat([batch[f"chosen_{k}"], batch[f"rejected_{k}"]]) for k in keys)
    return response_logps(model, ids, mask, labels, chunk_size=chunk_size)


def shared_prompt_logps(
    model, batch: dict, *, chunk_size: int = 1024, layout: str = DEFAULT_LAYOUT
) -> tuple[Tensor, Tensor]:
    """(2B,) float32 summed response log-probs ``[chosen; rejected]`` and (2B,) long token counts.

    Same contract (and, to float tolerance, the same values and gradients) as ``response_logps`` on
    the concatenated padded ``[chosen; rejected]`` batch, from one shared-prompt forward. Models or
    batches that cannot be packed fall back to that padded path (one WARNING per model type and reason).
    """
    reason = shared_prompt_support(model)
    packed = pack_pairs(batch, layout) if reason is None else None
    if isinstance(packed, str):
        reason = packed
    mask = _attention_mask(model, packed) if reason is None else None
    if isinstance(mask, str):
        reason = mask
    if reason is not None:
        _warn_fallback(model, reason)
        return _padded(model, batch, chunk_size)
    hidden, head, softcap = backbone_hidden(model, packed.input_ids, mask, packed.position_ids)
    rows = hidden.reshape(-1, hidden.shape[-1])[packed.source]  # (M, H)
    token_logps = chunked_logps(rows, packed.targets, head, softcap, chunk_size)  # (M,)
    sums = token_logps.new_zeros(packed.num_outputs).index_add(0, packed.owner, token_logps)
    counts = torch.bincount(packed.owner, minlength=packed.num_outputs)
    return sums, counts


def unique_tokens(batch: dict) -> int:
    """Tokens a shared-prompt forward processes: prompt once + chosen + rejected response, no padding."""
    p = _first_label(batch["chosen_labels"])
    return int((batch["chosen_attention_mask"].sum(1) + batch["rejected_attention_mask"].sum(1) - p).sum())

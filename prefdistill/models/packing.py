"""Shared-prompt packed forward: the n responses to one prompt as one sequence ``[prompt, r_1, ..., r_n]``.

A padded batch of groups (rows ``b*n .. b*n+n-1`` are the n responses to prompt b and start with the same
prompt ids, e.g. ``prefdistill.data.collate.collate_lists``; a pair batch is the case n = 2) is repacked
so each prompt is computed once instead of n times, and no compute goes to padding between a short and
a long response:

* tokens ``[prompt (p), r_1 (l_1), ..., r_n (l_n)]``, no padding inside a group;
* ``position_ids`` ``0..p-1`` then ``p..p+l_j-1`` for every response: positions restart at the prompt end;
* a 4D attention mask, causal within a group, where prompt tokens see the prompt and response j's tokens
  see the prompt and response j (never another response); groups never see each other;
* the first token of every response is predicted from the last *prompt* hidden state, so each supervised
  token is scored from an explicit gather index, not by a plain shift.

Layouts (``layout=``): ``"rows"`` (default) puts one group per row, right-padded to the longest group of
the batch (the attention mask is (B, 1, L, L)); ``"flat"`` concatenates all groups into one (1, L)
padding-free row with a block-diagonal mask. Both give the same numbers. On CPU there is no varlen
attention kernel: the flat layout's dense (L x L) mask makes attention cost grow with the square of the
batch, which is why "rows" is the default. Pairs, SmolLM2-135M, TL;DR-like, batch 2, 2-core CPU: padded
55-63 s vs "rows" 25-29 s per forward+backward; lists of 4: ``benchmarks/listwise_packing.py``.

Why a mask and not KV-cache reuse (prompt forward, then each response against the repeated cache): the
mask gives one backbone call over all unique tokens and lets every attention backend that takes a
prepared mask run it unchanged; gradients through the shared prompt states are exact in both.

Sliding windows: a window limits ``position_q - position_k`` (transformers' ``sliding_window_overlay``
on unpadded rows), so a response sees the last ``window`` positions of prompt + itself, exactly as in its
own padded row; packed physical offsets (response j sits after responses 1..j-1) never enter the mask.

transformers (5.x, ``masking_utils._preprocess_mask_arguments``) returns a 4D mask (tensor or flex
``BlockMask``) as-is. Per family (``FAMILIES``): ``plain`` (llama, gpt2) takes one mask; ``window``
(mistral) uses one mask for every layer, so its ``sliding_window`` is applied to it; ``layer_dict``
(gemma2, gemma3_text, qwen2) takes ``{"full_attention": m, "sliding_attention": m_window}``;
``gpt_neo`` applies its local window inside the attention on *physical* offsets (a ``bias`` buffer), so
its local layers get the position window by a hook (``_mark_local_window``). ``sdpa`` gets a boolean mask,
``eager`` an additive one, ``flex_attention`` a ``BlockMask`` (on CUDA; torch 2.13 has no flex backward
on CPU). Other families or backends (``flash_attention_*``) fall back to the padded path with a
one-time WARNING naming the model type and the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from prefdistill.models.logprobs import (
    IGNORE_INDEX,
    TokenLogps,
    _backbone_and_head,
    _unwrap,
    backbone_hidden,
    chunked_logps,
    flat_token_logps,
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
    "gpt_neo": "gpt_neo",
}
ATTN_IMPLS = ("sdpa", "eager", "flex_attention")
LAYOUTS = ("rows", "flat")
DEFAULT_LAYOUT = "rows"
PROMPT, PAD = 0, -1  # ``part`` of a token; response j (0-based) is part j + 1
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
    if getattr(config, "use_bidirectional_attention", False):
        return "bidirectional attention (an encoder) has no causal prompt/response structure"
    impl = getattr(config, "_attn_implementation", None)
    if impl not in ATTN_IMPLS or (impl == "flex_attention" and model_type == "gpt_neo"):
        return f"attention implementation {impl!r} takes no custom 4D mask (use one of {ATTN_IMPLS})"
    return None


def _warn_fallback(model, reason: str) -> None:
    model_type = getattr(_config(model), "model_type", type(_unwrap(model)).__name__)
    key = f"{model_type}:{reason}"
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "shared-prompt forward unavailable for model type %r: %s; falling back to separate padded "
            "forwards of every response (the prompt is computed once per response)",
            model_type,
            reason,
        )


@dataclass
class PackedGroups:
    """A batch of response groups repacked as ``[prompt, r_1, ..., r_n]`` sequences (module docstring)."""

    input_ids: Tensor  # (R, L)
    position_ids: Tensor  # (R, L)
    segment: Tensor  # (R, L) group index within the batch, -1 on padding
    part: Tensor  # (R, L) PROMPT, j + 1 for response j, PAD
    source: Tensor  # (M,) flat index (row * L + col) of the hidden state predicting each supervised token
    targets: Tensor  # (M,) token ids to score
    owner: Tensor  # (M,) output slot: the input row of the response the token belongs to
    num_outputs: int  # N = B * n input rows
    max_group_len: int


def _first_label(labels: Tensor) -> Tensor:
    """(N,) index of the first supervised label per row (T when none)."""
    sup = labels != IGNORE_INDEX
    idx = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
    return torch.where(sup, idx, labels.shape[1]).min(dim=1).values


def _pack_group(ids: Tensor, lengths: list[int], labels: Tensor, p: int):
    """One group (n rows of ``ids``/``labels``, prompt length ``p``) -> packed ids, positions, parts, and
    per response the (within-group) offsets of the hidden states predicting its tokens and its labels."""
    seq_ids, positions, parts, scored, end = (
        [ids[0, :p]],
        [torch.arange(p)],
        [torch.full((p,), PROMPT)],
        [],
        p,
    )
    for j, length in enumerate(lengths):
        size = length - p
        seq_ids.append(ids[j, p:length])
        positions.append(torch.arange(p, length))
        parts.append(torch.full((size,), j + 1))
        predictors = torch.cat([torch.tensor([p - 1]), torch.arange(end, end + size - 1)])
        scored.append((predictors, labels[j, p:length]))
        end += size
    return torch.cat(seq_ids), torch.cat(positions), torch.cat(parts), scored


def pack_groups(
    input_ids: Tensor, attention_mask: Tensor, labels: Tensor, group_size: int, layout: str = DEFAULT_LAYOUT
) -> PackedGroups | str:
    """Repack (N, T) right-padded rows, ``group_size`` consecutive rows per prompt; a reason string when
    the batch cannot be shared-prompt packed."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    n_rows, device = input_ids.shape[0], input_ids.device
    if group_size < 1 or n_rows % group_size:
        raise ValueError(f"{n_rows} rows do not split into groups of {group_size} responses")
    ids, labels = input_ids.cpu(), labels.cpu()
    starts, lengths = _first_label(labels).tolist(), attention_mask.sum(1).tolist()
    groups = []
    for g in range(0, n_rows, group_size):
        rows = range(g, g + group_size)
        p = starts[g]
        if any(starts[r] != p or not 1 <= p < lengths[r] for r in rows):
            return "a response without a prompt or without tokens, or prompts of different lengths in a group"
        if any(not torch.equal(ids[r, :p], ids[g, :p]) for r in rows):
            return "the responses of a group have different prompts"
        groups.append(
            _pack_group(ids[g : g + group_size], [lengths[r] for r in rows], labels[g : g + group_size], p)
        )
    sizes = [len(x[0]) for x in groups]
    if layout == "rows":
        n_out_rows, width, offsets = len(groups), max(sizes), [(b, 0) for b in range(len(groups))]
    else:
        n_out_rows, width = 1, sum(sizes)
        offsets = [(0, o) for o in torch.tensor([0] + sizes[:-1]).cumsum(0).tolist()]
    packed_ids = torch.zeros(n_out_rows, width, dtype=input_ids.dtype)
    position_ids = torch.zeros(n_out_rows, width, dtype=torch.long)
    segment = torch.full((n_out_rows, width), -1, dtype=torch.long)
    part = torch.full((n_out_rows, width), PAD, dtype=torch.long)
    source, targets, owner = [], [], []
    for b, ((seq, pos, prt, scored), (row, off)) in enumerate(zip(groups, offsets)):
        cols = slice(off, off + len(seq))
        packed_ids[row, cols], position_ids[row, cols], segment[row, cols], part[row, cols] = seq, pos, b, prt
        for j, (predictors, lab) in enumerate(scored):
            keep = lab != IGNORE_INDEX
            source.append(row * width + off + predictors[keep])
            targets.append(lab[keep])
            owner.append(torch.full((int(keep.sum()),), b * group_size + j, dtype=torch.long))
    return PackedGroups(
        input_ids=packed_ids.to(device),
        position_ids=position_ids.to(device),
        segment=segment.to(device),
        part=part.to(device),
        source=torch.cat(source).to(device),
        targets=torch.cat(targets).to(device),
        owner=torch.cat(owner).to(device),
        num_outputs=n_rows,
        max_group_len=max(sizes),
    )


def block_mask(packed: PackedGroups, window: int | None = None) -> Tensor:
    """(R, 1, L, L) bool, True = may attend: causal within a group; a response sees the prompt and itself.

    ``window``: also require ``position_q - position_k < window`` (sliding-window layers). Padding
    tokens attend only to themselves (no fully masked rows).
    """
    seg, part, pos = packed.segment, packed.part, packed.position_ids
    length = seg.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seg.device).tril()
    allowed = causal & (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] >= 0)
    allowed &= (part[:, None, :] == PROMPT) | (part[:, :, None] == part[:, None, :])
    if window is not None:
        allowed &= (pos[:, :, None] - pos[:, None, :]) < window
    eye = torch.eye(length, dtype=torch.bool, device=seg.device)
    allowed |= eye & (seg < 0)[:, :, None]
    return allowed[:, None]


def _flex_block_mask(allowed: Tensor):
    """A flex-attention ``BlockMask`` that reads the dense boolean mask (R, 1, L, L)."""
    from torch.nn.attention.flex_attention import create_block_mask

    dense = allowed[:, 0]

    def mask_mod(b, h, q_idx, kv_idx):
        return dense[b, q_idx, kv_idx]

    rows, length = dense.shape[0], dense.shape[-1]
    return create_block_mask(mask_mod, rows, None, length, length, device=str(dense.device), _compile=False)


def _backend_mask(packed: PackedGroups, window: int | None, impl: str, dtype: torch.dtype):
    allowed = block_mask(packed, window)
    if impl == "sdpa":
        return allowed
    if impl == "flex_attention":
        return _flex_block_mask(allowed)
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def _attention_mask(model, packed: PackedGroups) -> Tensor | dict | str:
    """What the backbone's ``attention_mask`` argument gets, or a reason to fall back."""
    config = _config(model)
    family, impl = FAMILIES[config.model_type], config._attn_implementation
    dtype = next(_unwrap(model).parameters()).dtype
    window = getattr(config, "sliding_window", None)
    if family == "gpt_neo":
        if packed.input_ids.shape[1] > config.max_position_embeddings:
            return "the packed row exceeds max_position_embeddings (the size of its causal buffer)"
        full = _backend_mask(packed, None, impl, dtype)
        if "local" in config.attention_layers:
            return _mark_local_window(model, full, _backend_mask(packed, config.window_size, impl, dtype))
        return full
    if family == "window":
        return _backend_mask(packed, window, impl, dtype)
    full = _backend_mask(packed, None, impl, dtype)
    if family == "plain":
        return full
    sliding = full if window is None else _backend_mask(packed, window, impl, dtype)
    return {"full_attention": full, "sliding_attention": sliding}


# -- GPT-Neo: local layers window physical offsets, the packing needs position offsets -----------------
def _gpt_neo_local_layers(model) -> list[torch.nn.Module]:
    from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

    layers = _unwrap(model).modules()
    return [m for m in layers if isinstance(m, GPTNeoSelfAttention) and m.attention_type == "local"]


def _position_window_in(module, args, kwargs):
    """Pre-hook: for a packed mask, drop the physical-offset window (``bias`` := plain causal) and take the
    position window from the mask's ``local_window_mask`` instead. Any other call passes unchanged."""
    local = getattr(kwargs.get("attention_mask"), "local_window_mask", None)
    if local is None:
        return None
    module.__dict__["physical_window_bias"] = module.bias  # a plain attribute, not a registered buffer
    module.bias = torch.ones_like(module.bias).tril()  # causal over physical offsets, no window
    return args, {**kwargs, "attention_mask": local}


def _position_window_out(module, args, output):
    """Post-hook (also on errors): restore the physical-window ``bias``."""
    saved = module.__dict__.pop("physical_window_bias", None)
    if saved is not None:
        module.bias = saved


def _mark_local_window(model, full, local):
    """GPT-Neo's local layers window on physical offsets (``GPTNeoSelfAttention.bias``, transformers
    ``modeling_gpt_neo.py``), which packing changes: response j sits after responses 1..j-1. The mask
    for the global layers carries the position-windowed one for the local layers, which hooks (installed
    once per model) swap in for the packed call only. Checkpoint recomputation sees the same mask object,
    so the hooks apply again."""
    for layer in _gpt_neo_local_layers(model):
        if not getattr(layer, "position_window_hooks", False):
            layer.register_forward_pre_hook(_position_window_in, with_kwargs=True)
            layer.register_forward_hook(_position_window_out, always_call=True)
            layer.position_window_hooks = True
    full.local_window_mask = local
    return full


def grouped_response_logps(
    model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, group_size: int, *,
    chunk_size: int = 1024, layout: str = DEFAULT_LAYOUT,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """(N,) float32 summed response log-probs and (N,) long token counts, in row order.

    Same contract (and, to float tolerance, the same values and gradients) as ``response_logps`` on the
    padded rows, from one shared-prompt forward of each group of ``group_size`` consecutive rows. Models
    or batches that cannot be packed fall back to ``response_logps`` (one WARNING per model type and reason).
    """
    tokens = grouped_token_logps(
        model, input_ids, attention_mask, labels, group_size, chunk_size=chunk_size, layout=layout
    )
    if tokens is None:
        return response_logps(model, input_ids, attention_mask, labels, chunk_size=chunk_size)
    return tokens.sums(), tokens.counts()


def grouped_token_logps(
    model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, group_size: int, *,
    chunk_size: int = 1024, layout: str = DEFAULT_LAYOUT, with_sq: bool = False, fallback: bool = False,
) -> TokenLogps | None:  # fmt: skip
    """The per-token form of ``grouped_response_logps``: every supervised token's log-probability (and, with
    ``with_sq``, its ``log Σ_v p_v²``), rows in input order. A batch that cannot be packed gives None (after
    the one-time WARNING), or with ``fallback`` the padded rows' ``flat_token_logps``."""
    reason = shared_prompt_support(model)
    packed = pack_groups(input_ids, attention_mask, labels, group_size, layout) if reason is None else None
    if isinstance(packed, str):
        reason = packed
    mask = _attention_mask(model, packed) if reason is None else None
    if isinstance(mask, str):
        reason = mask
    if reason is not None:
        _warn_fallback(model, reason)
        if not fallback:
            return None
        return flat_token_logps(model, input_ids, attention_mask, labels, chunk_size=chunk_size, with_sq=with_sq)
    hidden, head, softcap = backbone_hidden(model, packed.input_ids, mask, packed.position_ids)
    rows = hidden.reshape(-1, hidden.shape[-1])[packed.source]  # (M, H)
    values = chunked_logps(rows, packed.targets, head, softcap, chunk_size, with_sq=with_sq)  # (M,)
    values, sq = values if with_sq else (values, None)
    return TokenLogps(values, packed.owner, packed.num_outputs, sq)


def interleave_pairs(batch: dict) -> tuple[Tensor, Tensor, Tensor]:
    """A pair batch's ``chosen_*``/``rejected_*`` as (2B, T) rows ``[c_0, r_0, c_1, r_1, ...]`` (groups of 2)."""
    width = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    out = []
    for key, fill in (("input_ids", 0), ("attention_mask", 0), ("labels", IGNORE_INDEX)):
        sides = [batch[f"{s}_{key}"] for s in ("chosen", "rejected")]
        sides = [torch.nn.functional.pad(x, (0, width - x.shape[1]), value=fill) for x in sides]
        out.append(torch.stack(sides, dim=1).flatten(0, 1))
    return out[0], out[1], out[2]


def shared_prompt_logps(
    model, batch: dict, *, chunk_size: int = 1024, layout: str = DEFAULT_LAYOUT
) -> tuple[Tensor, Tensor]:
    """(2B,) float32 summed response log-probs ``[chosen; rejected]`` and (2B,) long token counts of a pair
    batch: ``grouped_response_logps`` with groups of 2 (same contract as ``response_logps`` on the
    concatenated padded ``[chosen; rejected]`` rows)."""
    sums, counts = grouped_response_logps(
        model, *interleave_pairs(batch), 2, chunk_size=chunk_size, layout=layout
    )
    return sums.view(-1, 2).t().reshape(-1), counts.view(-1, 2).t().reshape(-1)


def shared_prompt_token_logps(
    model, batch: dict, *, chunk_size: int = 1024, layout: str = DEFAULT_LAYOUT, with_sq: bool = False
) -> TokenLogps:
    """The per-token form of ``shared_prompt_logps``: rows ``[chosen; rejected]`` (row b is chosen b, row
    B + b rejected b), from one shared-prompt forward (or the padded rows when the batch cannot be packed)."""
    tokens = grouped_token_logps(
        model, *interleave_pairs(batch), 2, chunk_size=chunk_size, layout=layout, with_sq=with_sq, fallback=True
    )
    half = tokens.num_rows // 2  # interleaved row 2b + s -> s * B + b
    return TokenLogps(tokens.values, (tokens.owner % 2) * half + tokens.owner // 2, tokens.num_rows, tokens.log_sq_probs)


def unique_tokens(batch: dict) -> int:
    """Tokens a shared-prompt forward processes: each prompt once + every response, no padding.

    Pair batches (``chosen_*``/``rejected_*``) and list batches (``input_ids`` + ``list_size``)."""
    if "input_ids" in batch:
        n, lengths = batch["list_size"], batch["attention_mask"].sum(1)
        prompts = _first_label(batch["labels"]).view(-1, n)[:, 0]
        return int(lengths.sum() - (n - 1) * prompts.sum())
    p = _first_label(batch["chosen_labels"])
    return int((batch["chosen_attention_mask"].sum(1) + batch["rejected_attention_mask"].sum(1) - p).sum())

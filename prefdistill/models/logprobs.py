"""Log-probabilities of labelled tokens without materialising (N, T, V) logits.

Labels are NOT shifted: ``labels[:, t]`` (``-100`` = ignored) is predicted by the logits at ``t-1``;
a label at ``t = 0`` has no prediction and is ignored. ``response_logps`` runs the backbone for the
final hidden states (N, T, H), keeps only the M rows whose next token is supervised, and applies
lm_head + float32 log-softmax to chunks of ``chunk_size`` rows. With grad enabled each chunk is
recomputed in backward (activation checkpointing), so peak memory holds ``chunk_size x V`` logits
instead of ``N x T x V`` (or ``M x V``). Gemma-2's ``final_logit_softcapping`` is applied.

The backbone and lm_head are called directly (not the wrapper's ``forward``): with FSDP2/ZeRO-3, shard
lm_head as its own unit (or use ``naive_*``), since the root's forward hook would not gather it.

Architectures whose backbone cannot be found generically (or with extra logit scaling) fall back
to full logits via ``naive_*`` with a one-time warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
_UNSUPPORTED_SCALING = ("logit_scale", "logits_scaling")  # Cohere, Granite: not handled here
_warned: set[str] = set()


def selective_log_softmax(logits: Tensor, targets: Tensor) -> Tensor:
    """log_softmax(logits)[..., targets] in float32; logits (..., V), targets (...) -> (...)."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF ``PreTrainedModel`` inside a PEFT (or DDP-like ``.module``) wrapper."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _backbone_and_head(model: torch.nn.Module):
    """``(backbone, lm_head, softcap)`` or None when the generic path does not apply."""
    hf = _unwrap(model)
    prefix = getattr(hf, "base_model_prefix", None)
    backbone = getattr(hf, prefix, None) if prefix else None
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    config = getattr(hf, "config", None)
    if backbone is None or backbone is hf or head is None or config is None:
        return None
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in _UNSUPPORTED_SCALING):
        return None
    return backbone, head, getattr(config, "final_logit_softcapping", None)


def _warn_once(model: torch.nn.Module) -> None:
    name = type(_unwrap(model)).__name__
    if name not in _warned:
        _warned.add(name)
        log.warning(
            "response_logps: no generic backbone/lm_head for %s; using full logits (more memory)", name
        )


def _chunk_logits(hidden: Tensor, head: torch.nn.Module, softcap: float | None) -> Tensor:
    logits = head(hidden).float()  # (c, V)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def _chunk_logps(hidden: Tensor, targets: Tensor, head: torch.nn.Module, softcap: float | None) -> Tensor:
    return selective_log_softmax(_chunk_logits(hidden, head, softcap), targets)


def log_sq_probs(logits: Tensor) -> Tensor:
    """``log Σ_v p_v²`` of ``p = softmax(logits)`` over the last dim, float32, detached: (..., V) -> (...).

    WPO's per-token normaliser (Zhou et al. 2024, arXiv 2406.11827, Eq. 2 as TRL computes it: TRL
    ``trl/trainer/dpo_trainer.py`` ``log_sum_sq_probs``).
    """
    with torch.no_grad():
        return torch.logsumexp(2.0 * torch.log_softmax(logits.float(), -1), -1)


def _chunk_logps_sq(hidden: Tensor, targets: Tensor, head: torch.nn.Module, softcap: float | None):
    logits = _chunk_logits(hidden, head, softcap)
    return selective_log_softmax(logits, targets), log_sq_probs(logits)


def _shifted(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(N, T-1) targets for positions 0..T-2 and their mask (the next label is supervised)."""
    targets = labels[:, 1:]
    return targets, targets != IGNORE_INDEX


def backbone_hidden(model, input_ids, attention_mask, position_ids=None):
    """``(hidden (N, T, H), lm_head, softcap)`` from one backbone forward; None when the generic path does not apply.

    ``attention_mask`` may be a 2D padding mask or anything the backbone accepts (a prepared 4D mask, or
    a dict of them per layer type), see ``prefdistill.models.packing``.
    """
    parts = _backbone_and_head(model)
    if parts is None:
        return None
    backbone, head, softcap = parts
    out = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    )
    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state  # (N, T, H)
    return hidden, head, softcap


def chunked_logps(
    rows: Tensor, targets: Tensor, head: torch.nn.Module, softcap: float | None, chunk_size: int,
    with_sq: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:  # fmt: skip
    """(M,) float32 log-probs of ``targets`` (M,) under ``head(rows)`` (rows: (M, H) hidden states).

    lm_head + log-softmax run on ``chunk_size`` rows at a time; with grad enabled each chunk is
    recomputed in backward (keeps chunk x V, not M x V, logits alive); one chunk: no recompute.
    ``with_sq``: also the (M,) detached :func:`log_sq_probs` of every row, from the same logits.
    """
    needs_grad = rows.requires_grad or any(p.requires_grad for p in head.parameters())
    recompute = torch.is_grad_enabled() and needs_grad and rows.shape[0] > chunk_size
    fn = _chunk_logps_sq if with_sq else _chunk_logps
    chunks = []
    for i in range(0, rows.shape[0], max(1, chunk_size)):
        args = (rows[i : i + chunk_size], targets[i : i + chunk_size], head, softcap)
        chunks.append(checkpoint(fn, *args, use_reentrant=False) if recompute else fn(*args))
    if not with_sq:
        return torch.cat(chunks) if chunks else rows.new_zeros(0, dtype=torch.float32)
    empty = rows.new_zeros(0, dtype=torch.float32)
    return tuple(torch.cat(parts) if parts else empty for parts in zip(*chunks)) if chunks else (empty, empty)


@dataclass
class TokenLogps:
    """Log-probs of the supervised tokens of ``num_rows`` responses, flat and in order.

    ``values[i]`` is a token of row ``owner[i]``; the tokens of a row keep their order (rows may come
    in any order, e.g. interleaved pairs). ``log_sq_probs`` (detached, optional) is
    :func:`log_sq_probs` at the same tokens.
    """

    values: Tensor  # (M,) float32
    owner: Tensor  # (M,) long, row index of each token
    num_rows: int
    log_sq_probs: Tensor | None = None  # (M,) float32

    def sums(self) -> Tensor:
        """(N,) summed log-probs per row."""
        return self.values.new_zeros(self.num_rows).index_add(0, self.owner, self.values)

    def counts(self) -> Tensor:
        """(N,) long token count per row."""
        return torch.bincount(self.owner, minlength=self.num_rows)

    def padded(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(values (N, L), mask (N, L) bool, log_sq_probs (N, L) or None)``: row n's k-th token at
        ``[n, k]``, zero where ``mask`` is False; L = the longest row (at least 1)."""
        order = torch.sort(self.owner, stable=True).indices
        owner = self.owner[order]
        counts = self.counts()
        starts = torch.cumsum(counts, 0) - counts
        col = torch.arange(owner.numel(), device=owner.device) - starts[owner]
        width = max(int(counts.max()), 1) if self.num_rows else 1
        mask = torch.zeros(self.num_rows, width, dtype=torch.bool, device=owner.device)
        mask[owner, col] = True

        def place(flat: Tensor) -> Tensor:
            out = flat.new_zeros(self.num_rows, width)
            return out.index_put((owner, col), flat[order])

        sq = None if self.log_sq_probs is None else place(self.log_sq_probs)
        return place(self.values), mask, sq


def _packed_token_logps(
    model, input_ids, attention_mask, labels, position_ids, chunk_size: int
) -> tuple[Tensor, Tensor] | None:
    """(M,) log-probs of supervised tokens in row-major order, and the (N, T-1) mask; None = fallback."""
    out = backbone_hidden(model, input_ids, attention_mask, position_ids)
    if out is None:
        return None
    hidden, head, softcap = out
    targets, mask = _shifted(labels)
    rows, tgt = hidden[:, :-1][mask], targets[mask]  # (M, H), (M,)
    return chunked_logps(rows, tgt, head, softcap, chunk_size), mask


def flat_token_logps(
    model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, *, position_ids: Tensor | None = None,
    chunk_size: int = 1024, with_sq: bool = False,
) -> TokenLogps:  # fmt: skip
    """The supervised tokens' log-probs of (N, T) padded rows as a :class:`TokenLogps` (rows in order)."""
    out = backbone_hidden(model, input_ids, attention_mask, position_ids)
    if out is None:
        _warn_once(model)
        logps, mask, sq = _naive_logps(model, input_ids, attention_mask, labels, position_ids, with_sq)
        owner = mask.nonzero(as_tuple=True)[0]
        return TokenLogps(logps[mask], owner, input_ids.shape[0], None if sq is None else sq[mask])
    hidden, head, softcap = out
    targets, mask = _shifted(labels)
    rows, tgt = hidden[:, :-1][mask], targets[mask]  # (M, H), (M,)
    values = chunked_logps(rows, tgt, head, softcap, chunk_size, with_sq=with_sq)
    values, sq = values if with_sq else (values, None)
    return TokenLogps(values, mask.nonzero(as_tuple=True)[0], input_ids.shape[0], sq)


def response_token_logps(
    model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, *, position_ids: Tensor | None = None,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """((N, T) float32 log-probs aligned with ``labels``, zero where masked; (N, T) bool mask)."""
    packed = _packed_token_logps(model, input_ids, attention_mask, labels, position_ids, chunk_size)
    if packed is None:
        _warn_once(model)
        return naive_response_token_logps(model, input_ids, attention_mask, labels, position_ids=position_ids)
    flat, shifted_mask = packed
    mask = F.pad(shifted_mask, (1, 0), value=False)  # (N, T): label t scored from position t-1
    token_logps = torch.zeros(mask.shape, dtype=torch.float32, device=flat.device)
    token_logps = token_logps.masked_scatter(mask, flat)
    return token_logps, mask


def response_logps(
    model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, *, position_ids: Tensor | None = None,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """((N,) float32 sum of labelled-token log-probs, (N,) long count of labelled tokens)."""
    token_logps, mask = response_token_logps(
        model, input_ids, attention_mask, labels, position_ids=position_ids, chunk_size=chunk_size
    )
    return token_logps.sum(-1), mask.sum(-1)


def _naive_logps(model, input_ids, attention_mask, labels, position_ids, with_sq: bool):
    """(N, T) log-probs (zero where unsupervised), (N, T) mask and optional (N, T) log Σp² from full logits."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    targets, shifted_mask = _shifted(labels)
    logps = selective_log_softmax(logits[:, :-1], targets.clamp(min=0))  # (N, T-1)
    # select, never multiply: a non-finite logit at an unsupervised position must not leak (NaN * 0 = NaN)
    logps = F.pad(torch.where(shifted_mask, logps, 0.0), (1, 0))
    sq = F.pad(torch.where(shifted_mask, log_sq_probs(logits[:, :-1]), 0.0), (1, 0)) if with_sq else None
    return logps, F.pad(shifted_mask, (1, 0), value=False), sq


def naive_response_token_logps(
    model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, *, position_ids: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Reference implementation: full (N, T, V) logits from ``model(...)``, then log-softmax."""
    logps, mask, _ = _naive_logps(model, input_ids, attention_mask, labels, position_ids, False)
    return logps, mask


def naive_response_logps(
    model, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, *, position_ids: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``response_logps`` computed the obvious way (for tests and unsupported architectures)."""
    token_logps, mask = naive_response_token_logps(
        model, input_ids, attention_mask, labels, position_ids=position_ids
    )
    return token_logps.sum(-1), mask.sum(-1)

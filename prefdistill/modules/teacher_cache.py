"""Top-k teacher log-probs computed once per (data, teacher, k) and stored on disk.

Token-level distillation on dataset responses needs the teacher's next-token distribution at
every response position. Those never change during training, so one no-grad pass stores the
teacher's ``k`` most likely tokens and their log-probs per position, and training reads them by
dataset row: the teacher is not held in memory and never runs per step.

**Approximation.** The losses then compare teacher and student on the teacher's top-k support
only, both renormalised on it (see :mod:`prefdistill.losses.divergence`, "Top-k teacher"): student
mass outside the top-k is not penalised by the KD term, and the divergence is exact only when the
teacher's mass outside its top-k is 0. ``k = 64``-``256`` keeps nearly all of a trained LM's mass.

Key = sha256 over the tokenized examples of the split (token ids and rows: covers dataset content,
split, tokenizer, chat template, max lengths), the teacher ``ModelSpec.identity()``, ``k`` and the
response side (``chosen`` / ``rejected``); written atomically and checked on read like the reference
cache (``prefdistill/utils/cache.py``). File: ``index`` (N,) rows, ``offsets`` (N+1,) into the flat ``logps``
(M, k) float16, ``ids`` (M, k) int32 and ``label_logps`` (M,) (the teacher's log-prob of the
response token itself), M = total response tokens, positions in order. Other formats
(``teacher_formats.py``) add ``tail_logps`` (M,) (the mass outside the top-k) or ``weights`` (M, k) (sampled
tokens); the format is part of the key. The teacher may be a weighted list of models (a mixture, mixed from
their full distributions before the top-k is taken) or a server (``teachers.py``).

**Another tokenizer** (:func:`cross_tokenizer_topk`, losses that need ``cross_tokenizer``): the
teacher reads its own tokenization of the same prompt and response text, and the alignment of
:mod:`prefdistill.data.alignment` is stored with its top-k in the *student's* positions: at each
span head the teacher's top-k (``logps``), those tokens' student ids (``student_ids``, -1 without a
counterpart) and the teacher's log-prob of the span's later tokens (``span_logps``); per student
token ``span_start`` (index of its span head in the response, -1 unaligned) and ``matched``. The key
adds the teacher's template, the truncation policy, the student tokenizer and the texts. The lm_head
runs on ``chunk_size`` response rows at a time: no (B, T, V_teacher) tensor exists.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from prefdistill.data.alignment import align_spans, response_spans, vocabulary_map
from prefdistill.data.collate import pad_rows
from prefdistill.data.records import DataError, RowError
from prefdistill.data.templates import PromptEncoder
from prefdistill.data.truncation import truncate
from prefdistill.models.logprobs import backbone_hidden
from prefdistill.modules.teacher_formats import TeacherFormat
from prefdistill.utils.cache import TensorCache, tokenized_data_key

log = logging.getLogger(__name__)
FORMAT = 3  # 2: label_logps added, per-side keys; 3: float16 values, formats (teacher_formats.py)
LOGITS_PER_CHUNK = 2**26  # float32 logits of one lm_head chunk in a teacher pass (256 MB)
FIELDS = TeacherFormat().fields
CROSS_FIELDS = ("index", "offsets", "logps", "student_ids", "span_logps", "span_start", "matched")
# stored field -> TokenInputs field, and the fill value of positions the field does not cover
_INPUTS = {
    "logps": ("teacher_topk_logps", 0.0),
    "ids": ("teacher_topk_ids", 0),
    "label_logps": ("teacher_label_logps", 0.0),
    "tail_logps": ("teacher_tail_logps", 0.0),
    "weights": ("teacher_sample_weights", 0.0),
    "student_ids": ("teacher_topk_student_ids", -1),
    "span_logps": ("teacher_span_logps", 0.0),
    "span_start": ("span_start", -1),
    "matched": ("span_matched", False),
}


class TeacherCache(TensorCache):
    def __init__(self, root, fields: tuple[str, ...] = FIELDS):
        super().__init__(root, fields, what="teacher top-k")


def teacher_cache_key(
    examples: list[dict], teacher_identity: dict, topk: int, side: str = "chosen", **extra
) -> str:
    payload = {"teacher": teacher_identity, "topk": int(topk), "kind": "teacher_topk", "format": FORMAT}
    return tokenized_data_key(examples, {**payload, "side": side, **extra})


def _hidden_and_head(model, input_ids, attention_mask):
    """``(hidden or full logits, lm_head or None, softcap)`` of one forward (see :func:`teacher_rows`)."""
    parts = backbone_hidden(model, input_ids, attention_mask)
    if parts is None:  # no generic backbone: full logits, selected rows only
        return model(input_ids=input_ids, attention_mask=attention_mask).logits, None, None
    return parts


def _chunk_logps(part, rows: slice, vocab_limit: int | None) -> torch.Tensor:
    hidden, head, softcap = part
    logits = (hidden[rows] if head is None else head(hidden[rows])).float()[:, :vocab_limit]
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.log_softmax(logits, -1)


@torch.no_grad()
def teacher_rows(
    models, input_ids, attention_mask, rows: torch.Tensor, targets: torch.Tensor, fmt: TeacherFormat,
    *, weights: list[float] | None = None, examples: torch.Tensor | None = None, chunk_size: int = 256,
    vocab_limit: int | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The stored fields (``fmt.rows``) of the R positions ``rows`` (B, T) bool of one forward of the teacher
    (a model, or a list of models mixed with ``weights``: ``log Σ_i w_i p_i``), from its full log-probs; the
    lm_head applied ``chunk_size`` rows at a time, fewer when a chunk's logits would pass ``LOGITS_PER_CHUNK``
    (256 rows of a 262k vocabulary); logits past ``vocab_limit`` are dropped (a padded vocabulary).
    ``targets`` (B, T) are the response tokens; ``examples`` (B,) the dataset rows (``sampled`` draws)."""
    models = models if isinstance(models, (list, tuple)) else [models]
    log_w = torch.tensor(weights or [1.0], dtype=torch.float32).log()
    parts = [_hidden_and_head(m, input_ids, attention_mask) for m in models]
    parts = [(hidden[rows], head, softcap) for hidden, head, softcap in parts]
    vocab = max(p[0].shape[-1] if p[1] is None else p[1].weight.shape[0] for p in parts)
    chunk_size = max(1, min(chunk_size, LOGITS_PER_CHUNK // vocab // len(parts)))
    targets = targets[rows].long()
    owners = None if examples is None else examples[:, None].expand_as(rows)[rows].cpu()
    out = []
    for i in range(0, len(targets), chunk_size):
        chunk = slice(i, i + chunk_size)
        logps = [_chunk_logps(p, chunk, vocab_limit) for p in parts]
        mixed = logps[0] if len(logps) == 1 else torch.logsumexp(torch.stack(logps) + log_w[:, None, None], 0)
        out.append(fmt.rows(mixed, targets[chunk], None if owners is None else owners[chunk]))
    if not out:
        empty = fmt.rows(
            torch.zeros(1, vocab), torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long)
        )
        return {k: v[:0] for k, v in empty.items()}
    return {k: torch.cat([o[k] for o in out]) for k in out[0]}


@torch.no_grad()
def same_vocabulary_topk(
    teacher, loader, side: str, fmt: TeacherFormat, *, weights: list[float] | None = None, chunk_size: int = 256,
    vocab_limit: int | None = None, device=None, label: str = "",
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The stored fields (``fmt.fields``) of every example of ``loader``'s batches: the teacher's (a model or a
    weighted list) distribution at each response token of the ``side`` (``chosen`` / ``rejected``) responses."""
    index, counts, parts = [], [], []
    for batch in tqdm(loader, desc=label, leave=False):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        labels = batch[f"{side}_labels"][:, 1:]
        rows = F.pad(labels != -100, (0, 1), value=False)  # position t predicts token t + 1
        parts.append({k: v.cpu() for k, v in teacher_rows(
            teacher, batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"], rows,
            F.pad(labels.clamp_min(0), (0, 1)), fmt, weights=weights, examples=batch["index"],
            chunk_size=chunk_size, vocab_limit=vocab_limit,
        ).items()})  # fmt: skip
        index.append(batch["index"].cpu())
        counts.append(rows.sum(-1).cpu())
    return table_of(index, counts, parts, fmt)


def table_of(index: list, counts: list, parts: list[dict], fmt: TeacherFormat) -> dict[str, torch.Tensor]:
    """One table from per-batch ``index`` (B,), per-row position ``counts`` (B,) and per-position fields."""
    if not parts:
        raise ValueError("no examples to compute the teacher table of")
    counts = torch.cat(counts)
    fields = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return fmt.finish({"index": torch.cat(index), "offsets": F.pad(counts.cumsum(0), (1, 0)), **fields})


class TeacherTable:
    """Lookup of cached per-token rows by dataset row, assembled into (B, T, ...) tensors for a batch."""

    def __init__(self, data: dict[str, torch.Tensor]):
        self.offsets = data["offsets"].long()
        self.fields = {k: v for k, v in data.items() if k in _INPUTS}
        self.position = {int(r): i for i, r in enumerate(data["index"].tolist())}

    def batch(self, index: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ``TokenInputs`` tensors of the rows ``index`` whose response positions are ``mask`` (B, T)."""
        out = {}
        for name, values in self.fields.items():
            key, fill = _INPUTS[name]
            dtype = torch.float32 if values.is_floating_point() else values.dtype
            dtype = torch.long if dtype == torch.int32 else dtype
            out[key] = torch.full((*mask.shape, *values.shape[1:]), fill, dtype=dtype, device=mask.device)
        for b, row in enumerate(index.tolist()):
            if row not in self.position:
                raise KeyError(f"teacher cache has no entry for dataset row {row}")
            i = self.position[row]
            lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
            positions = mask[b].nonzero().squeeze(-1)
            if hi - lo != len(positions):
                raise ValueError(
                    f"teacher cache row {row} holds {hi - lo} response tokens but the batch has {len(positions)}; "
                    "the cache key should have changed: delete the cache folder"
                )
            for name, values in self.fields.items():
                rows = values[lo:hi].to(mask.device)
                if name == "span_start":  # index within the response -> position in the batch
                    rows = torch.where(rows >= 0, positions[rows.clamp_min(0).long()], -1)
                out[_INPUTS[name][0]][b, positions] = rows.to(out[_INPUTS[name][0]].dtype)
        return out


# ------------------------------------------------------------------ a teacher with another tokenizer
def _response_text(record) -> str:
    return record.chosen if hasattr(record, "chosen") else record.response


def _ends(spans: list[tuple[int, int]], n: int) -> bool:
    """The response is complete and ends in a zero-width end token (eos / end of turn)."""
    return bool(spans) and spans[-1] == (n, n) and any(b == n > a for a, b in spans)


def align_example(
    example: dict, record, student, teacher, policy, label: str
) -> tuple[list[int], list, list]:
    """``(teacher_prompt_ids, teacher_response_ids, groups)`` of one example; ``student``/``teacher`` are
    ``(tokenizer, PromptEncoder)``. A response neither tokenization reproduces is a ``DataError``."""
    text = _response_text(record)
    t_prompt, (t_resp,) = teacher[1].encode(record.prompt, [text])
    try:
        t_prompt, (t_resp,), _, _ = truncate(t_prompt, [t_resp], policy, teacher[1].bos_id)
    except RowError as err:
        raise DataError(f"{label}: row {example['index']}: teacher tokenization: {err}") from err
    spans = []
    for (tok, encoder), ids, who in (
        (student, example["chosen_ids"], "student"),
        (teacher, t_resp, "teacher"),
    ):
        found = response_spans(tok, encoder.template, record.prompt, text, ids)
        if found is None:
            raise DataError(
                f"{label}: row {example['index']}: field 'chosen'/'response': the {who} tokenizer's rendering "
                "of the response does not reproduce its token ids; cannot align it across tokenizers"
            )
        spans.append(found)
    groups = align_spans(
        *spans, student_eos=_ends(spans[0], len(text)), teacher_eos=_ends(spans[1], len(text))
    )
    return t_prompt, t_resp, groups


def _assemble(
    groups, n_student: int, topk, tids, label_logps, mapping: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per student token of one response: the stored fields (see the module docstring)."""
    k = topk.shape[-1]
    out = {
        "logps": torch.zeros(n_student, k), "student_ids": torch.full((n_student, k), -1, dtype=torch.int32),
        "span_logps": torch.zeros(n_student), "span_start": torch.full((n_student,), -1, dtype=torch.int32),
        "matched": torch.zeros(n_student, dtype=torch.bool),
    }  # fmt: skip
    if not groups:
        return out
    s0, s1, t0, t1 = (torch.tensor([getattr(g, f) for g in groups]) for f in ("s0", "s1", "t0", "t1"))
    members = torch.cat([torch.arange(g.s0, g.s1) for g in groups])  # every student token of a span
    out["span_start"][members] = torch.repeat_interleave(s0, s1 - s0).int()
    out["matched"][s0] = (s1 - s0 == 1) & (t1 - t0 == 1)
    out["logps"][s0] = topk[t0]
    out["student_ids"][s0] = mapping[tids[t0].long()].int()
    cumulative = F.pad(label_logps.cumsum(0), (1, 0))  # teacher log-prob of tokens t0+1 .. t1-1
    out["span_logps"][s0] = cumulative[t1] - cumulative[t0 + 1]
    return out


@torch.no_grad()
def cross_tokenizer_topk(
    teacher, teacher_tokenizer, student_tokenizer, examples: list[dict], records: dict, *, policy,
    student_template: str, teacher_template: str, topk: int, batch_size: int = 8, chunk_size: int = 256,
    device=None, label: str = "", mapping: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The stored fields (``CROSS_FIELDS``) of every example: its teacher top-k in the student's positions.

    ``mapping`` (teacher id -> student id, :func:`~prefdistill.data.alignment.vocabulary_map`) is computed
    here unless given (it takes seconds for a 262k vocabulary: callers reuse it across splits).
    """
    student = (student_tokenizer, PromptEncoder(student_tokenizer, student_template))
    t_side = (teacher_tokenizer, PromptEncoder(teacher_tokenizer, teacher_template))
    if mapping is None:
        vocab = teacher.get_output_embeddings().weight.shape[0]
        mapping = torch.tensor(vocabulary_map(student_tokenizer, teacher_tokenizer, vocab), dtype=torch.long)
    pad = teacher_tokenizer.pad_token_id if teacher_tokenizer.pad_token_id is not None else t_side[1].eos_id
    cross_format = TeacherFormat("topk", topk, dtype=torch.float32)
    parts, counts, n_groups, n_matched = [], [], 0, 0
    for b in tqdm(
        range(0, len(examples), batch_size), desc=f"teacher top-{topk} across tokenizers", leave=False
    ):
        chunk = examples[b : b + batch_size]
        aligned = [align_example(ex, records[ex["index"]], student, t_side, policy, label) for ex in chunk]
        prompts, responses = [a[0] for a in aligned], [a[1] for a in aligned]
        length = max(len(p) + len(r) for p, r in zip(prompts, responses))
        ids, attention, labels = (t.to(device) for t in pad_rows(prompts, responses, pad, length))
        rows = F.pad(labels[:, 1:] != -100, (0, 1), value=False)  # position t predicts token t + 1
        targets = F.pad(labels[:, 1:].clamp_min(0), (0, 1))
        fields = teacher_rows(teacher, ids, attention, rows, targets, cross_format, chunk_size=chunk_size)
        values, tids, picked = (fields[k].cpu() for k in ("logps", "ids", "label_logps"))
        start = 0
        for ex, (_, resp, groups) in zip(chunk, aligned):
            end = start + len(resp)
            parts.append(
                _assemble(
                    groups,
                    len(ex["chosen_ids"]),
                    values[start:end],
                    tids[start:end],
                    picked[start:end],
                    mapping,
                )
            )
            start = end
            counts.append(len(ex["chosen_ids"]))
            n_groups += len(groups)
            n_matched += sum(g.matched for g in groups)
    n_tokens = sum(counts)
    log.info(
        "%s: %d student tokens, %d aligned spans (%.0f%% matched one-to-one), %.0f%% of student tokens aligned",
        label, n_tokens, n_groups, 100 * n_matched / max(n_groups, 1),
        100 * sum(int((p["span_start"] >= 0).sum()) for p in parts) / max(n_tokens, 1),
    )  # fmt: skip
    counts_t = torch.tensor(counts, dtype=torch.long)
    return {
        "index": torch.tensor([ex["index"] for ex in examples], dtype=torch.long),
        "offsets": F.pad(counts_t.cumsum(0), (1, 0)),
        **{name: torch.cat([p[name] for p in parts]) for name in CROSS_FIELDS[2:]},
    }

"""Where a distillation's teacher distributions come from: one model, a weighted mixture of models, or a server.

:class:`Teachers` wraps what the ``teacher`` config gives the module:

* one ``ModelSpec``: a local frozen model, run online (full logits) or once into a table;
* several ``ModelSpec`` (``teacher=[a,b] module.teacher_weights=[0.5,0.5]``, same vocabulary): the mixture
  ``p(v) = Σ_i w_i p_i(v)``, online as its log-probs ``log Σ_i w_i softmax(z_i)`` (given to the losses as
  ``teacher_logits``: log-probs are logits of the same distribution; a temperature τ ≠ 1 then tempers the
  mixture, ``p^(1/τ)``, not each teacher) or computed once into a table from the full mixed distribution;
  weights must be as many as the teachers, non-negative and sum to 1 (none given: equal weights);
* a :class:`~prefdistill.models.served.ServedTeacher`: its top-k over HTTP, into a table for dataset responses
  and per batch for on-policy rollouts; no weights are held. A server exposes its top-k only, so it cannot be
  part of a mixture (the mixture's top-k needs every teacher's probability of every candidate) and cannot give
  the ``sampled`` format.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from prefdistill.models import ModelSpec, load_model
from prefdistill.models.served import ServedTeacher
from prefdistill.modules.response_rows import response_logits
from prefdistill.modules.teacher_cache import TeacherTable, table_of
from prefdistill.modules.teacher_formats import FORMATS, TeacherFormat

log = logging.getLogger(__name__)


def _as_list(teacher) -> list:
    if isinstance(teacher, (ModelSpec, ServedTeacher)):
        return [teacher]
    if isinstance(teacher, dict) or type(teacher).__name__ == "DictConfig":
        return list(teacher.values())
    return list(teacher)


class Teachers:
    """The configured teacher(s) and mixing weights; see the module docstring."""

    def __init__(self, teacher, weights: list[float] | None = None):
        self.specs = _as_list(teacher)
        if not self.specs:
            raise ValueError("teacher: an empty list of teachers")
        for spec in self.specs:
            if not isinstance(spec, (ModelSpec, ServedTeacher)):
                raise TypeError(
                    f"teacher: a ModelSpec or a ServedTeacher per teacher, got {type(spec).__name__}"
                )
        self.served = self.specs[0] if isinstance(self.specs[0], ServedTeacher) else None
        if len(self.specs) > 1 and any(isinstance(s, ServedTeacher) for s in self.specs):
            raise ValueError(
                "teacher: a served teacher cannot be mixed with others (a server gives only its top-k)"
            )
        self.weights = self._checked(weights)
        if self.mixture:
            shown = ", ".join(f"{s.name_or_path} {w:g}" for s, w in zip(self.specs, self.weights))
            log.info("teacher: mixture of %d teachers, weights [%s]", len(self.specs), shown)

    def _checked(self, weights) -> list[float] | None:
        n = len(self.specs)
        if weights is None:
            return None if n == 1 else [1.0 / n] * n
        weights = [float(w) for w in weights]
        if len(weights) != n:
            raise ValueError(f"module.teacher_weights has {len(weights)} weights for {n} teacher(s)")
        if any(w < 0 or not math.isfinite(w) for w in weights):
            raise ValueError(f"module.teacher_weights must be finite and >= 0, got {weights}")
        if abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"module.teacher_weights must sum to 1, got {weights} (sum {sum(weights):.6g})")
        if n == 1:
            raise ValueError(
                "module.teacher_weights is for several teachers (teacher=[a,b]); one teacher was given"
            )
        return weights

    @property
    def mixture(self) -> bool:
        return len(self.specs) > 1

    @property
    def first(self):
        return self.specs[0]

    def identity(self) -> dict:
        if not self.mixture:
            return self.first.identity()
        return {"mixture": [s.identity() for s in self.specs], "weights": self.weights}

    def load(self) -> list[torch.nn.Module]:
        if self.served is not None:
            raise RuntimeError("a served teacher holds no weights")
        return [load_model(spec, trainable=False) for spec in self.specs]

    def logits(
        self, models: list, batch: dict, side: str, index: torch.Tensor, vocab_limit: int | None
    ) -> torch.Tensor:
        """(B, R, V) float32 teacher logits at the response positions ``index`` of one side of ``batch``
        (``response_rows.py``; a mixture: its log-probs), no grad."""
        with torch.no_grad():
            out = [response_logits(m, batch, side, index, vocab_limit) for m in models]
            if len(out) == 1:
                return out[0]
            log_w = torch.tensor(self.weights, device=out[0].device).log()
            return torch.logsumexp(
                torch.stack([torch.log_softmax(o, -1) for o in out]) + log_w[:, None, None, None], 0
            )


def teacher_format(loss, support: str, k: int, teachers: Teachers | None, cache, on_policy) -> TeacherFormat:
    """The stored format of a module's teacher tables; a setting that would have no effect is an error."""
    support = "topk" if support == "auto" else support
    if support not in FORMATS:
        raise ValueError(f"module.teacher_support={support!r} is not one of auto, {', '.join(FORMATS)}")
    served = teachers is not None and teachers.served is not None
    if support != "topk" and cache is None and not served:
        raise ValueError(
            f"module.teacher_support={support!r} is the format of stored teacher tables: set module.teacher_cache "
            "(or use a served teacher); an online teacher gives its full distribution"
        )
    if support not in loss.teacher_formats:
        raise ValueError(f"loss {loss.name!r} reads teacher formats {sorted(loss.teacher_formats)}, "
                         f"not module.teacher_support={support!r}")  # fmt: skip
    if served and support == "sampled":
        raise ValueError(
            "module.teacher_support=sampled draws from the full distribution; a served teacher gives its top-k"
        )
    several = teachers is not None and (teachers.mixture or served)
    if several and "cross_tokenizer" in loss.needs:
        raise ValueError(f"loss {loss.name!r} aligns one local teacher of another tokenizer; a mixture or a served "
                         "teacher must share the student's vocabulary")  # fmt: skip
    if several and on_policy is not None and on_policy.teacher_mix > 0:
        raise ValueError(
            "on_policy.teacher_mix samples from one local teacher, not from a mixture or a server"
        )
    return TeacherFormat(support, k)


# ------------------------------------------------------------------ a served teacher's tables
def served_fields(teacher: ServedTeacher, batch: dict, side: str, fmt: TeacherFormat, tokenizer) -> tuple:
    """``(counts (B,), fields)`` of one batch: the stored fields (``fmt``) at every response position."""
    if fmt.name == "sampled":
        raise ValueError(
            "teacher_support=sampled draws from the full distribution; a served teacher gives its top-k"
        )
    labels = batch[f"{side}_labels"][:, 1:].cpu()
    rows = labels != -100  # position t predicts token t + 1
    lengths = batch[f"{side}_attention_mask"].sum(-1).tolist()
    sequences = [ids[:n].tolist() for ids, n in zip(batch[f"{side}_input_ids"].cpu(), lengths)]
    answers = teacher.topk(sequences, fmt.k, tokenizer)
    values, ids, own = [], [], []
    for b, (v, i, o) in enumerate(answers):
        at = rows[b, : len(o)].nonzero().squeeze(-1)
        if int(rows[b].sum()) != len(at):
            raise ValueError(f"row {int(batch['index'][b])}: response positions past the attended tokens")
        values.append(v[at])
        ids.append(i[at])
        own.append(o[at])
    values, ids, own = torch.cat(values), torch.cat(ids), torch.cat(own)
    if len(ids) and int(ids.max()) >= len(tokenizer):
        raise ValueError(f"teacher server {teacher.url} returned token id {int(ids.max())}, outside the student's "
                         f"vocabulary of {len(tokenizer)}")  # fmt: skip
    fields = {"logps": values.to(fmt.dtype), "ids": ids.int(), "label_logps": own.to(fmt.dtype)}
    if fmt.name == "topk_tail":  # the mass outside the top-k, from the served values (float64)
        outside = (1.0 - values.double().exp().sum(-1)).clamp_min(0.0)
        fields["tail_logps"] = outside.log().to(fmt.dtype)
    return rows.sum(-1), fields


def served_table(
    teacher: ServedTeacher, loader, side: str, fmt: TeacherFormat, tokenizer, label: str = ""
) -> dict:
    """The stored fields (``fmt.fields``) of every example of ``loader``, asked of the server."""
    index, counts, parts = [], [], []
    for batch in tqdm(loader, desc=label, leave=False):
        count, fields = served_fields(teacher, batch, side, fmt, tokenizer)
        index.append(batch["index"].cpu())
        counts.append(count)
        parts.append(fields)
    return table_of(index, counts, parts, fmt)


def served_inputs(
    teacher: ServedTeacher, batch: dict, side: str, fmt: TeacherFormat, tokenizer, mask
) -> dict:
    """The ``TokenInputs`` teacher tensors of one batch (e.g. an on-policy rollout), asked of the server now."""
    count, fields = served_fields(teacher, batch, side, fmt, tokenizer)
    table = TeacherTable({"index": batch["index"].cpu(), "offsets": F.pad(count.cumsum(0), (1, 0)), **fields})
    return table.batch(batch["index"].cpu(), mask)

"""Canonical records every data source is mapped to, and the checks that guard them.

Four shapes cover everything the training methods consume:

* :class:`SFTRecord`  -- ``(prompt, response)``;
* :class:`PairRecord` -- ``(prompt, chosen, rejected)``, optionally scored:
  ``chosen_score``/``rejected_score`` are s(y; x) of an upstream score function
  (e.g. ROUGE-L against a reference, a reward model), both set or both ``None``;
* :class:`ListRecord` -- ``(prompt, responses[n], scores[n])``;
* :class:`UnpairedRecord` -- ``(prompt, completion, label)``: one completion judged desirable
  (``label`` true) or undesirable (KTO, BCO). ``label`` must be a JSON boolean.

A prompt is either a plain string or a list of chat messages
``[{"role": "system"|"user"|"assistant", "content": str}, ...]`` whose last message
is a user turn (multi-turn Anthropic-HH conversations keep their earlier turns this
way). Responses are plain strings without surrounding whitespace; the template step
decides how prompt and response are joined.

Bad input never disappears silently: every check raises :class:`DataError` with the
field name, and the loader prefixes the file (or dataset) and row, e.g.
``train.jsonl: row 7 (line 8): field 'chosen': empty string``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Union

from prefdistill.utils.errors import UsageError

Message = dict[str, str]
Prompt = Union[str, list[Message]]
ROLES = ("system", "user", "assistant")


class DataError(UsageError, ValueError):
    """Bad or unreadable input data; the message names the source, row and field."""


class RowError(DataError):
    """A problem with one row; ``reason`` is the counter key used when rows are skipped."""

    def __init__(self, field: str, problem: str, reason: str = "invalid_field"):
        super().__init__(f"field {field!r}: {problem}")
        self.field, self.problem, self.reason = field, problem, reason


@dataclass(frozen=True)
class SFTRecord:
    prompt: Prompt
    response: str
    id: str = ""


@dataclass(frozen=True)
class PairRecord:
    prompt: Prompt
    chosen: str
    rejected: str
    id: str = ""
    chosen_score: float | None = None
    rejected_score: float | None = None

    @property
    def scored(self) -> bool:
        return self.chosen_score is not None and self.rejected_score is not None


@dataclass(frozen=True)
class ListRecord:
    prompt: Prompt
    responses: list[str]
    scores: list[float]
    id: str = ""


@dataclass(frozen=True)
class UnpairedRecord:
    prompt: Prompt
    completion: str
    label: bool
    id: str = ""


Record = Union[SFTRecord, PairRecord, ListRecord, UnpairedRecord]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def require_text(row: dict, field: str, *, key: str | None = None, strip: bool = True) -> str:
    """Return ``row[key]`` (``key`` defaults to ``field``) as a non-empty (stripped) string."""
    value = row.get(field if key is None else key)
    if value is None:
        raise RowError(field, "missing", "missing_field")
    if not isinstance(value, str):
        raise RowError(field, f"expected str, got {_type_name(value)}", "wrong_type")
    if not value.strip():
        raise RowError(field, "empty string", "empty_field")
    return value.strip() if strip else value


def check_messages(value: Any, field: str = "prompt") -> list[Message]:
    """Validate a chat-message list and return it with stripped contents."""
    if not isinstance(value, list):
        raise RowError(field, f"expected str or list of messages, got {_type_name(value)}", "wrong_type")
    if not value:
        raise RowError(field, "empty message list", "empty_field")
    out = []
    for j, msg in enumerate(value):
        where = f"{field}[{j}]"
        if not isinstance(msg, dict):
            raise RowError(where, f"expected dict, got {_type_name(msg)}", "wrong_type")
        role = require_text(msg, f"{where}.role", key="role")
        if role not in ROLES:
            raise RowError(f"{where}.role", f"unknown role {role!r} (expected one of {ROLES})")
        out.append({"role": role, "content": require_text(msg, f"{where}.content", key="content")})
    if out[-1]["role"] != "user":
        raise RowError(field, f"last message must be a user turn, got {out[-1]['role']!r}")
    return out


def check_prompt(value: Any, field: str = "prompt") -> Prompt:
    if isinstance(value, list):
        return check_messages(value, field)
    return require_text({field: value}, field)


def check_score(value: Any, field: str) -> float | None:
    """A finite number as ``float``; ``None`` (absent) stays ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RowError(field, f"expected number, got {_type_name(value)}", "wrong_type")
    if not math.isfinite(value):
        raise RowError(field, f"expected a finite number, got {value}", "not_finite")
    return float(value)


def score_pair(row: dict, chosen_key: str, rejected_key: str) -> tuple[float | None, float | None]:
    """``(chosen_score, rejected_score)`` of a row: both finite numbers, or both ``None``."""
    chosen = check_score(row.get(chosen_key), chosen_key)
    rejected = check_score(row.get(rejected_key), rejected_key)
    if (chosen is None) != (rejected is None):
        missing, given = (chosen_key, rejected_key) if chosen is None else (rejected_key, chosen_key)
        raise RowError(
            missing, f"missing while {given!r} is given (give both scores or neither)", "missing_field"
        )
    return chosen, rejected


def check_scores(value: Any, n: int, field: str = "scores") -> list[float]:
    if value is None:
        raise RowError(field, "missing", "missing_field")
    if not isinstance(value, list):
        raise RowError(field, f"expected list of numbers, got {_type_name(value)}", "wrong_type")
    if len(value) != n:
        raise RowError(field, f"expected {n} scores (one per response), got {len(value)}")
    if None in value:
        raise RowError(f"{field}[{value.index(None)}]", "expected number, got null", "wrong_type")
    return [check_score(s, f"{field}[{j}]") for j, s in enumerate(value)]


def check_responses(value: Any, field: str = "responses") -> list[str]:
    if value is None:
        raise RowError(field, "missing", "missing_field")
    if not isinstance(value, list):
        raise RowError(field, f"expected list of str, got {_type_name(value)}", "wrong_type")
    if len(value) < 2:
        raise RowError(field, f"a listwise row needs at least 2 responses, got {len(value)}")
    return [require_text({f"{field}[{j}]": r}, f"{field}[{j}]") for j, r in enumerate(value)]


def check_label(value: Any, field: str = "label") -> bool:
    """An unpaired row's label: a JSON boolean (true = desirable). 0/1, "yes" or null are bad rows."""
    if value is None:
        raise RowError(field, "missing", "missing_field")
    if not isinstance(value, bool):
        raise RowError(field, f"expected true or false, got {_type_name(value)} {value!r}", "wrong_type")
    return value


def check_distinct_pair(chosen: str, rejected: str) -> None:
    """A pair's two responses must differ: with ``chosen == rejected`` the margin of every pairwise
    loss (DPO's ``h``, SimPO's ``A_w - A_l``, ...) is the same function of the weights on both sides,
    so the pair contributes a zero gradient and trains nothing, silently."""
    if chosen == rejected:
        raise RowError(
            "rejected",
            "identical to 'chosen' (a pair with no preference trains nothing)",
            "identical_responses",
        )


def row_id(row: dict, default: str, key: str = "id") -> str:
    value = row.get(key)
    return default if value is None else str(value)


RECORD_TYPES = ("pairwise", "sft", "listwise", "unpaired")


def convert(record: Record, record_type: str) -> Record:
    """Re-shape a record: pair -> sft takes ``chosen``; pair -> list scores ``[chosen_score,
    rejected_score]`` (``[1, 0]`` when unscored); list -> pair takes the best and worst scored
    responses (with their scores); list -> sft the best. An unpaired record stays unpaired whatever
    ``record_type`` asks (one judged completion cannot form a pair, a list or an SFT target), and
    pairs/lists become unpaired rows only through ``data.unpair`` (two rows per pair)."""
    if record_type not in RECORD_TYPES:
        raise ValueError(f"record_type must be one of {RECORD_TYPES}, got {record_type!r}")
    if isinstance(record, UnpairedRecord):
        return record
    if record_type == "unpaired":
        raise RowError(
            "completion",
            "a pair or list row read as unpaired: rows need {prompt, completion, label}; set data.unpair=true "
            "to cut each pair into a desirable and an undesirable row",
            "wrong_shape",
        )
    if isinstance(record, PairRecord):
        if record_type == "sft":
            return SFTRecord(record.prompt, record.chosen, record.id)
        if record_type == "listwise":
            scores = [record.chosen_score, record.rejected_score] if record.scored else [1.0, 0.0]
            return ListRecord(record.prompt, [record.chosen, record.rejected], scores, record.id)
        return record
    if isinstance(record, ListRecord):
        if record_type == "listwise":
            return record
        best = max(range(len(record.scores)), key=record.scores.__getitem__)
        if record_type == "sft":
            return SFTRecord(record.prompt, record.responses[best], record.id)
        worst = min(range(len(record.scores)), key=record.scores.__getitem__)
        if record.scores[best] == record.scores[worst]:
            raise RowError("scores", "all scores are equal, so there is no preference", "tied_scores")
        return PairRecord(
            record.prompt,
            record.responses[best],
            record.responses[worst],
            record.id,
            record.scores[best],
            record.scores[worst],
        )
    if record_type != "sft":
        raise DataError(f"an SFT source cannot provide {record_type!r} records")
    return record

"""Records -> tokenised examples (the dicts the collate functions take), counting truncation.

This is where the template (:mod:`~prefdistill.data.templates`) and the truncation
policy (:mod:`~prefdistill.data.truncation`) meet. It runs eagerly, in the
datamodule's ``setup``: the datasets used on CPU are small, and an eager pass makes
every count final before training starts (a tqdm bar shows progress on large sets).
"""

from __future__ import annotations

from collections import Counter

from tqdm.auto import tqdm

from prefdistill.data.loading import note_skip
from prefdistill.data.records import (
    DataError,
    ListRecord,
    PairRecord,
    Record,
    RowError,
    SFTRecord,
    UnpairedRecord,
)
from prefdistill.data.templates import PromptEncoder
from prefdistill.data.truncation import TruncationPolicy, truncate

_PROGRESS_MIN = 5000


def new_stats() -> dict:
    """Per-split counters; ``rows_skipped`` maps a reason to a count."""
    return {
        "rows_read": 0,
        "rows_kept": 0,
        "rows_skipped": Counter(),
        "prompts_truncated": 0,
        "responses_truncated": 0,
    }


def _responses(record: Record) -> list[str]:
    if isinstance(record, PairRecord):
        return [record.chosen, record.rejected]
    if isinstance(record, SFTRecord):
        return [record.response]
    if isinstance(record, UnpairedRecord):
        return [record.completion]
    return list(record.responses)


def to_example(index: int, record: Record, encoder: PromptEncoder, policy: TruncationPolicy, stats: dict):
    """One record -> one example dict; raises ``RowError`` when the response cannot fit."""
    prompt_ids, responses = encoder.encode(record.prompt, _responses(record))
    prompt_ids, responses, prompt_cut, n_cut = truncate(prompt_ids, responses, policy, encoder.bos_id)
    stats["prompts_truncated"] += int(prompt_cut)
    stats["responses_truncated"] += n_cut
    example = {"prompt_ids": prompt_ids, "index": index}
    if isinstance(record, ListRecord):
        example.update(response_ids=responses, scores=list(record.scores))
    elif isinstance(record, UnpairedRecord):
        example.update(completion_ids=responses[0], label=record.label)
    else:
        example.update(zip(("chosen_ids", "rejected_ids"), responses))
        if isinstance(record, PairRecord) and record.scored:
            example.update(chosen_score=record.chosen_score, rejected_score=record.rejected_score)
    return example


def build_examples(
    rows: list[tuple[int, Record]],
    encoder: PromptEncoder,
    policy: TruncationPolicy,
    stats: dict,
    *,
    on_bad_row: str = "error",
    label: str = "",
) -> list[dict]:
    """Tokenise ``[(row_index, record)]``; rows whose response cannot fit error or are skipped."""
    examples = []
    bar = tqdm(rows, desc=f"tokenising {label}", disable=len(rows) < _PROGRESS_MIN, leave=False)
    for index, record in bar:
        try:
            examples.append(to_example(index, record, encoder, policy, stats))
        except RowError as err:
            if on_bad_row == "error":
                raise DataError(
                    f"{label}: row {index}: {err} (set data.on_bad_row=skip to skip such rows)"
                ) from err
            note_skip(stats["rows_skipped"], err.reason, f"{label}: row {index}: {err}")
    stats["rows_kept"] = len(examples)
    return examples


def summary(split: str, stats: dict) -> str:
    """The one-line log summary of a split's stats. Its counts add up: rows read = kept + skipped + moved to
    validation (the rows a split without a validation split gives to it)."""
    skipped = sum(stats["rows_skipped"].values())
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(stats["rows_skipped"].items()))
    moved = stats.get("rows_to_validation", 0)
    return (
        f"data[{split}]: {stats['rows_read']} rows read, {stats['rows_kept']} kept, {skipped} skipped"
        + (f" ({reasons})" if reasons else "")
        + (f", {moved} moved to validation" if moved else "")
        + f", {stats['prompts_truncated']} prompts truncated, {stats['responses_truncated']} responses truncated"
    )

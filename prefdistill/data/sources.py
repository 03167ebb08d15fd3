"""Row mappers: one small function per dataset schema, from a raw row to a canonical record.

Each mapper takes one raw row (a dict, exactly as ``datasets`` yields it) and returns a
:class:`~prefdistill.data.records.PairRecord` or ``ListRecord``; it raises ``RowError``
naming the offending field. Which hub id / splits each source uses lives in
:mod:`prefdistill.data.loading`; the mappers do not read files.

* ``hh_rlhf``        Anthropic/hh-rlhf: ``chosen``/``rejected`` transcripts.
* ``orca_dpo``       Intel/orca_dpo_pairs: ``system``, ``question``, ``chosen``, ``rejected``.
* ``ultrafeedback``  HuggingFaceH4/ultrafeedback_binarized: ``prompt``, ``chosen``/``rejected``
  message lists, ``score_chosen``/``score_rejected`` (-> ``chosen_score``/``rejected_score``).
* ``tldr``           CarperAI/openai_summarize_comparisons: ``prompt``, ``chosen``, ``rejected``.
* ``tldr_feedback``  openai/summarize_from_feedback ``comparisons``: ``info``, ``summaries``, ``choice``.
* ``local``          any file with (mapped) canonical columns; pairs may carry ``chosen_score``
  and ``rejected_score``. A listwise file (``responses`` + ``scores``) read as pairwise or
  sft becomes best-vs-worst pairs (best response) via :func:`~prefdistill.data.records.convert`.
  Unpaired rows (``completion`` + boolean ``label``, no ``chosen``) are read as unpaired records
  whatever the record type (they cannot be re-shaped).
"""

from __future__ import annotations

import re

from prefdistill.data.records import (
    ListRecord,
    PairRecord,
    RowError,
    SFTRecord,
    UnpairedRecord,
    check_label,
    check_messages,
    check_prompt,
    check_responses,
    check_scores,
    require_text,
    row_id,
    score_pair,
)

_HH_TURN = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLE = {"Human": "user", "Assistant": "assistant"}
ASSISTANT_MARK = "\n\nAssistant:"


def split_hh(transcript: str, field: str) -> tuple[str, str]:
    """Split an HH transcript at its LAST ``\\n\\nAssistant:``: ``(prompt_text, final_answer)``.

    ``prompt_text`` ends with ``\\n\\nAssistant:`` (the raw DPO-paper prompt)."""
    cut = transcript.rfind(ASSISTANT_MARK)
    if cut < 0:
        raise RowError(field, "transcript has no '\\n\\nAssistant:' turn", "bad_transcript")
    answer = transcript[cut + len(ASSISTANT_MARK) :].strip()
    if not answer:
        raise RowError(field, "empty final assistant answer", "empty_field")
    return transcript[: cut + len(ASSISTANT_MARK)], answer


def hh_messages(prompt_text: str, field: str) -> list[dict[str, str]]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:"`` -> chat messages."""
    parts = _HH_TURN.split(prompt_text)
    if parts[0].strip():
        raise RowError(field, "transcript does not start with '\\n\\nHuman:'", "bad_transcript")
    turns = [{"role": _HH_ROLE[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]
    if not turns or turns[-1]["role"] != "assistant" or turns[-1]["content"]:
        raise RowError(field, "transcript does not end with an open Assistant turn", "bad_transcript")
    return check_messages(turns[:-1], field)


def hh_rlhf(row: dict, i: int) -> PairRecord:
    chosen_prompt, chosen = split_hh(require_text(row, "chosen", strip=False), "chosen")
    rejected_prompt, rejected = split_hh(require_text(row, "rejected", strip=False), "rejected")
    if chosen_prompt != rejected_prompt:
        raise RowError(
            "rejected", "chosen and rejected transcripts have different prompts", "prompt_mismatch"
        )
    return PairRecord(hh_messages(chosen_prompt, "chosen"), chosen, rejected, row_id(row, str(i)))


def orca_dpo(row: dict, i: int) -> PairRecord:
    question = require_text(row, "question")
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise RowError("system", f"expected str, got {type(system).__name__}", "wrong_type")
    prompt = (
        question
        if not (system or "").strip()
        else check_messages([{"role": "system", "content": system}, {"role": "user", "content": question}])
    )
    return PairRecord(prompt, require_text(row, "chosen"), require_text(row, "rejected"), row_id(row, str(i)))


def _last_assistant(row: dict, field: str) -> str:
    messages = row.get(field)
    if messages is None:
        raise RowError(field, "missing", "missing_field")
    if not isinstance(messages, list):
        raise RowError(field, f"expected list of messages, got {type(messages).__name__}", "wrong_type")
    answers = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    if not answers:
        raise RowError(field, "no assistant message", "missing_field")
    return require_text(answers[-1], f"{field}[-1].content", key="content")


def ultrafeedback(row: dict, i: int) -> PairRecord:
    prompt = require_text(row, "prompt")
    chosen, rejected = _last_assistant(row, "chosen"), _last_assistant(row, "rejected")
    scores = score_pair(row, "score_chosen", "score_rejected")
    return PairRecord(prompt, chosen, rejected, row_id(row, str(i), key="prompt_id"), *scores)


def _strip_tldr(text: str) -> str:
    return text[len("TL;DR:") :].strip() if text.startswith("TL;DR:") else text


def tldr(row: dict, i: int) -> PairRecord:
    prompt = require_text(row, "prompt")
    if not prompt.endswith("TL;DR:"):
        prompt += "\nTL;DR:"
    chosen = _strip_tldr(require_text(row, "chosen"))
    rejected = _strip_tldr(require_text(row, "rejected"))
    for field, text in (("chosen", chosen), ("rejected", rejected)):
        if not text:
            raise RowError(field, "empty summary after 'TL;DR:'", "empty_field")
    return PairRecord(prompt, chosen, rejected, row_id(row, str(i)))


def tldr_feedback(row: dict, i: int) -> PairRecord:
    info = row.get("info")
    if not isinstance(info, dict):
        raise RowError("info", "missing" if info is None else "expected dict", "missing_field")
    if info.get("post"):
        prompt = (
            f"SUBREDDIT: r/{require_text(info, 'info.subreddit', key='subreddit')}\n\n"
            f"TITLE: {require_text(info, 'info.title', key='title')}\n\n"
            f"POST: {require_text(info, 'info.post', key='post')}\n\nTL;DR:"
        )
    else:  # CNN/DM rows of the validation split carry an article instead of a post
        prompt = f"ARTICLE: {require_text(info, 'info.post', key='article')}\n\nTL;DR:"
    summaries, choice = row.get("summaries"), row.get("choice")
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise RowError("summaries", "expected a list of 2 summaries", "wrong_type")
    if choice not in (0, 1) or isinstance(choice, bool):
        raise RowError("choice", f"expected 0 or 1, got {choice!r}", "wrong_type")
    texts = [require_text(s or {}, f"summaries[{j}].text", key="text") for j, s in enumerate(summaries)]
    return PairRecord(prompt, texts[choice], texts[1 - choice], row_id(info, str(i)))


def local(row: dict, i: int, record_type: str, fields: dict[str, str] | None = None):
    """Read canonical columns (renamed through ``fields``: canonical name -> column name).

    A row is read in the shape of ``record_type``; a row of another shape (a listwise row --
    ``responses``, no ``chosen`` -- read as pairwise/sft, a pair row read as listwise, or a pair
    row without ``response`` read as sft) is read in its own shape and re-shaped by
    :func:`~prefdistill.data.records.convert`."""
    names = (
        "prompt",
        "response",
        "chosen",
        "rejected",
        "chosen_score",
        "rejected_score",
        "responses",
        "scores",
        "completion",
        "label",
        "id",
    )
    col = {name: (fields or {}).get(name, name) for name in names}
    prompt = check_prompt(row.get(col["prompt"]), col["prompt"])
    rid = row_id(row, str(i), key=col["id"])
    shapes = ("response", "chosen", "rejected", "responses", "completion")
    has = {k: row.get(col[k]) is not None for k in shapes}
    other_shape = (has["chosen"] and has["rejected"]) or has["responses"]
    if (has["completion"] and not has["chosen"] and not has["responses"]) or (
        record_type == "unpaired" and not other_shape
    ):
        completion = require_text(row, col["completion"])
        return UnpairedRecord(prompt, completion, check_label(row.get(col["label"]), col["label"]), rid)
    if record_type == "sft" and (has["response"] or not other_shape):
        return SFTRecord(prompt, require_text(row, col["response"]), rid)
    as_pair = (
        has["chosen"] and not has["responses"]
        if record_type == "listwise"
        else not has["responses"] or has["chosen"]
    )
    if as_pair:
        chosen, rejected = require_text(row, col["chosen"]), require_text(row, col["rejected"])
        return PairRecord(
            prompt, chosen, rejected, rid, *score_pair(row, col["chosen_score"], col["rejected_score"])
        )
    responses = check_responses(row.get(col["responses"]), col["responses"])
    return ListRecord(
        prompt, responses, check_scores(row.get(col["scores"]), len(responses), col["scores"]), rid
    )

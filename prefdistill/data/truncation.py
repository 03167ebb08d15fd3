"""The explicit truncation policy: cap the prompt, then fit the responses, and count both.

1. A prompt longer than ``max_prompt_length`` is cut. ``keep_end`` (default) keeps its
   last tokens -- the question closest to the answer -- and re-attaches the leading
   BOS, so the one-BOS rule survives; ``keep_start`` keeps its first tokens.
2. Each response is cut to ``max_length - len(prompt)`` tokens (it then loses its eos,
   as in the DPO reference code).
3. If not even one response token fits (only possible when
   ``max_prompt_length == max_length``) the row is rejected with a ``RowError`` whose
   reason is ``no_room_for_response``: an error, or a counted skip with
   ``on_bad_row=skip``.

The caller counts ``prompt_truncated`` and ``responses_truncated`` from the return value.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefdistill.data.records import RowError

TRUNCATION_MODES = ("keep_end", "keep_start")


@dataclass(frozen=True)
class TruncationPolicy:
    max_length: int = 512
    max_prompt_length: int = 256
    mode: str = "keep_end"

    def __post_init__(self):
        if self.mode not in TRUNCATION_MODES:
            raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {self.mode!r}")
        if not 1 <= self.max_prompt_length <= self.max_length:
            raise ValueError(
                f"need 1 <= max_prompt_length <= max_length, got {self.max_prompt_length}, {self.max_length}"
            )


def truncate(
    prompt_ids: list[int],
    responses: list[list[int]],
    policy: TruncationPolicy,
    bos_id: int | None = None,
) -> tuple[list[int], list[list[int]], bool, int]:
    """Return ``(prompt_ids, responses, prompt_was_cut, n_responses_cut)``."""
    cap = policy.max_prompt_length
    prompt_cut = len(prompt_ids) > cap
    if prompt_cut and policy.mode == "keep_start":
        prompt_ids = prompt_ids[:cap]
    elif prompt_cut:
        has_bos = bos_id is not None and prompt_ids[0] == bos_id
        prompt_ids = [bos_id] + prompt_ids[-(cap - 1) :] if has_bos and cap > 1 else prompt_ids[-cap:]
    budget = policy.max_length - len(prompt_ids)
    if budget < 1:
        raise RowError(
            "prompt",
            f"no room for the response: prompt has {len(prompt_ids)} tokens, max_length={policy.max_length}",
            "no_room_for_response",
        )
    n_cut = sum(len(r) > budget for r in responses)
    return prompt_ids, [r[:budget] for r in responses], prompt_cut, n_cut

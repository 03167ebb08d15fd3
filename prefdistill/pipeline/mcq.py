"""PAD's MCQ calibration score: the teacher judges each pair of responses as a two-option question.

Following EganGu/PAD ``data_gen/gen/prob.py`` (spec section 4, step 4): for every unordered pair
``(i, j)``, ``i < j``, the teacher sees the query and ``A) '''y_i'''`` / ``B) '''y_j'''`` (triple double quotes) and we read its
next-token distribution. ``P(A)`` (``P(B)``) is the summed probability of the top-20 next tokens whose
decoded text is shorter than 3 characters and contains the letter, ``+ 1e-8``. We normalise the two,
``P(i beats j) = P(A) / (P(A) + P(B))`` (``normalize=False`` keeps the raw ``P(A)``), and

    p_i = (1e-8 + sum_{j != i} P(i beats j)) / (n - 1),      scores_mcq_i = log p_i.

``both_orders=True`` also asks with the options swapped and averages, to cancel position bias
(the released code asks once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import torch

from prefdistill.data.records import Prompt
from prefdistill.data.templates import PromptEncoder

EPS = 1e-8
TOP_TOKENS = 20
MCQ_SYSTEM = (
    "You are a helpful and precise assistant for checking the quality of responses. Evaluate the "
    "candidate responses to the query based on relevance, accuracy, completeness, coherence and "
    "clarity. Output only the identifier of the best response (A or B), or None if no response is "
    "acceptable. Do not output anything else."
)
MCQ_USER = (
    '### Query\n{query}\n\n### Candidate Responses\nA) """{a}"""\nB) """{b}"""\n\n'
    "### Output\nThe identifier of the best response is:"
)


def query_text(prompt: Prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


def truncate_tokens(tokenizer, text: str, max_tokens: int | None) -> str:
    if max_tokens is None:
        return text
    ids = tokenizer.encode(text, add_special_tokens=False)
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def mcq_messages(tokenizer, prompt: Prompt, a: str, b: str, max_response_tokens: int | None = 2500):
    """System + user messages; the system text moves into the user turn if the template has no system role."""
    user = MCQ_USER.format(
        query=query_text(prompt),
        a=truncate_tokens(tokenizer, a, max_response_tokens),
        b=truncate_tokens(tokenizer, b, max_response_tokens),
    )
    messages = [{"role": "system", "content": MCQ_SYSTEM}, {"role": "user", "content": user}]
    if getattr(tokenizer, "chat_template", None):
        try:
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # e.g. Gemma: "System role not supported"
            messages = [{"role": "user", "content": f"{MCQ_SYSTEM}\n\n{user}"}]
    return messages


def letter_probs(next_logits: torch.Tensor, tokenizer, top: int = TOP_TOKENS) -> list[tuple[float, float]]:
    """(B, V) next-token logits -> ``[(P(A), P(B))]`` from the top-``top`` tokens (+1e-8 each)."""
    probs = next_logits.float().softmax(-1)
    values, ids = probs.topk(min(top, probs.shape[-1]), dim=-1)
    decoded: dict[int, str] = {}
    out = []
    for row_values, row_ids in zip(values.tolist(), ids.tolist()):
        pa = pb = EPS
        for p, t in zip(row_values, row_ids):
            text = decoded.setdefault(t, tokenizer.decode([t]))
            if len(text) < 3:
                pa += p if "A" in text else 0.0
                pb += p if "B" in text else 0.0
        out.append((pa, pb))
    return out


def mcq_scores(n: int, wins: dict[tuple[int, int], float]) -> list[float]:
    """``log p_i`` from ``wins[(i, j)] = P(i beats j)`` for all ordered pairs ``i != j``."""
    return [math.log((EPS + sum(wins[(i, j)] for j in range(n) if j != i)) / (n - 1)) for i in range(n)]


def pair_wins(pa: float, pb: float, normalize: bool = True) -> tuple[float, float]:
    """(P(A wins), P(B wins)) of one question."""
    return (pa / (pa + pb), pb / (pa + pb)) if normalize else (pa, pb)


@torch.inference_mode()
def next_token_logits(model, encoder: PromptEncoder, prompts: Sequence, batch_size: int = 8) -> torch.Tensor:
    """(N, V) float32 next-token logits after each (templated, generation-prompted) prompt."""
    ids = [encoder.encode(p, [])[0] for p in prompts]
    order = sorted(range(len(ids)), key=lambda k: -len(ids[k]))
    device = next(model.parameters()).device
    pad = encoder.tokenizer.pad_token_id if encoder.tokenizer.pad_token_id is not None else encoder.eos_id
    out: list[torch.Tensor | None] = [None] * len(ids)
    for b in range(0, len(order), batch_size):
        batch = [ids[k] for k in order[b : b + batch_size]]
        width = max(len(x) for x in batch)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
        ).logits
        for k, row in zip(order[b : b + batch_size], logits[:, -1].float().cpu()):
            out[k] = row
    return torch.stack(out) if out else torch.zeros(0)


def mcq_list_scores(
    model, tokenizer, prompts: Sequence[Prompt], response_lists: Sequence[Sequence[str]], *,
    template: str = "auto", batch_size: int = 8, normalize: bool = True, both_orders: bool = False,
    max_response_tokens: int | None = 2500,
) -> list[list[float]]:  # fmt: skip
    """``scores_mcq`` (log p_i) for each response list, judged by ``model`` pair by pair."""
    encoder = PromptEncoder(tokenizer, template)
    questions, slots = [], []  # slots[q] = (list index, option-A response, option-B response)
    for li, (prompt, responses) in enumerate(zip(prompts, response_lists)):
        for i, j in combinations(range(len(responses)), 2):
            for a, b in [(i, j), (j, i)] if both_orders else [(i, j)]:
                questions.append(
                    mcq_messages(tokenizer, prompt, responses[a], responses[b], max_response_tokens)
                )
                slots.append((li, a, b))
    probs = letter_probs(next_token_logits(model, encoder, questions, batch_size), tokenizer)
    wins: list[dict] = [{} for _ in prompts]
    for (li, a, b), (pa, pb) in zip(slots, probs):
        wa, wb = pair_wins(pa, pb, normalize)
        scale = 0.5 if both_orders else 1.0
        wins[li][(a, b)] = wins[li].get((a, b), 0.0) + scale * wa
        wins[li][(b, a)] = wins[li].get((b, a), 0.0) + scale * wb
    return [mcq_scores(len(r), w) for r, w in zip(response_lists, wins)]

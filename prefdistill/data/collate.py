"""Pure collate functions: tokenised examples -> right-padded tensors with masked labels.

An example is a dict of token-id lists produced by the datamodule:

* SFT:       ``{"prompt_ids", "chosen_ids", "index"}``
* pairwise:  ``{"prompt_ids", "chosen_ids", "rejected_ids", "index"}`` (+ ``chosen_score``,
  ``rejected_score`` floats for scored pairs)
* listwise:  ``{"prompt_ids", "response_ids": [[...], ...], "scores": [...], "index"}``
* unpaired:  ``{"prompt_ids", "completion_ids", "label": bool, "index"}`` (+ ``"pair"``: the source
  row of a pair cut by :func:`unpair_examples`; + ``"kl_completion_ids"``: the mismatched completion
  :func:`add_kl_completions` gives the row)

Batch contract (the training modules depend on it):

* ``{chosen,rejected}_input_ids``  (B, T) long, prompt + response, right padded;
* ``{chosen,rejected}_attention_mask`` (B, T) long, 1 real / 0 pad;
* ``{chosen,rejected}_labels`` (B, T) long: the input id on response positions
  (final eos included), -100 on prompt and padding. NOT shifted.
* chosen and rejected share one T so they can be concatenated into one forward.
* ``index`` (B,) long: the row of each example within its split.
* ``chosen_scores``/``rejected_scores`` (B,) float32: only when every example of the
  batch is a scored pair (s(y; x), e.g. for the PLaD margin loss); a batch mixing
  scored and unscored pairs is an error.

SFT batches carry only the ``chosen_*`` keys and ``index``. :func:`collate_lists`
returns ``input_ids``/``attention_mask``/``labels`` of shape (B*n, T) (example-major:
row ``b*n + j`` is response ``j`` of example ``b``), ``scores`` (B, n) float,
``index`` (B,) and ``list_size`` n. :func:`collate_unpaired` returns ``completion_{input_ids,
attention_mask,labels}`` (B, T) of ``prompt + completion`` and ``kl_{input_ids,attention_mask,labels}``
(B, T) of ``prompt + mismatched completion`` (same T, so the two concatenate or pack as a pair),
``desirable`` (B,) bool, ``pair_ids`` (B,) long (−1: not cut from a pair) and ``index`` (B,).
"""

from __future__ import annotations

import random

import torch

IGNORE_INDEX = -100


def pad_rows(prompts: list[list[int]], responses: list[list[int]], pad_token_id: int, length: int):
    """Stack ``prompt + response`` rows to (N, length): input ids, attention mask, labels."""
    n = len(prompts)
    input_ids = torch.full((n, length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        p, total = len(prompt), len(prompt) + len(response)
        input_ids[row, :total] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask[row, :total] = 1
        labels[row, p:total] = torch.tensor(response, dtype=torch.long)
    return input_ids, attention_mask, labels


def collate_pairs(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Collate pairwise (or SFT, when examples have no ``rejected_ids``) examples."""
    if not examples:
        raise ValueError("collate_pairs got an empty list of examples")
    sides = ("chosen", "rejected") if "rejected_ids" in examples[0] else ("chosen",)
    prompts = [ex["prompt_ids"] for ex in examples]
    length = max(len(ex["prompt_ids"]) + len(ex[f"{side}_ids"]) for ex in examples for side in sides)
    batch: dict[str, torch.Tensor] = {}
    for side in sides:
        ids, mask, labels = pad_rows(prompts, [ex[f"{side}_ids"] for ex in examples], pad_token_id, length)
        batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"], batch[f"{side}_labels"] = (
            ids,
            mask,
            labels,
        )
    batch["index"] = torch.tensor([ex["index"] for ex in examples], dtype=torch.long)
    scored = ["chosen_score" in ex and "rejected_score" in ex for ex in examples]
    if len(sides) == 2 and all(scored):
        for side in sides:
            batch[f"{side}_scores"] = torch.tensor(
                [ex[f"{side}_score"] for ex in examples], dtype=torch.float32
            )
    elif len(sides) == 2 and any(scored):
        raise ValueError(
            f"pairwise batch mixes scored and unscored pairs (index {examples[scored.index(False)]['index']} "
            "has no scores); a dataset must score all its pairs or none"
        )
    return batch


def collate_lists(examples: list[dict], pad_token_id: int) -> dict:
    """Collate listwise examples; every example in a batch must have the same list size."""
    if not examples:
        raise ValueError("collate_lists got an empty list of examples")
    n = len(examples[0]["response_ids"])
    if any(len(ex["response_ids"]) != n or len(ex["scores"]) != n for ex in examples):
        sizes = sorted({len(ex["response_ids"]) for ex in examples})
        raise ValueError(f"listwise batch mixes list sizes {sizes}; use one list size per dataset")
    prompts = [ex["prompt_ids"] for ex in examples for _ in range(n)]
    responses = [r for ex in examples for r in ex["response_ids"]]
    length = max(len(p) + len(r) for p, r in zip(prompts, responses))
    input_ids, attention_mask, labels = pad_rows(prompts, responses, pad_token_id, length)
    return {
        "input_ids": input_ids,  # (B*n, T)
        "attention_mask": attention_mask,
        "labels": labels,
        "scores": torch.tensor([ex["scores"] for ex in examples], dtype=torch.float),  # (B, n)
        "index": torch.tensor([ex["index"] for ex in examples], dtype=torch.long),
        "list_size": n,
    }


# -- unpaired rows (KTO, BCO) -----------------------------------------------------------------------


def unpair_examples(examples: list[dict]) -> list[dict]:
    """Cut every tokenised pair into two unpaired rows: ``chosen`` (label true) then ``rejected`` (false).

    Row ``index`` of pair ``i`` becomes ``2i`` and ``2i + 1`` (unique within the split) and both keep
    ``pair = i``, so a batch holding both halves can report pair accuracy. Done per split after the
    split is formed, so the two halves of a pair always land in the same split. Rows that are already
    unpaired pass through unchanged.
    """
    out = []
    for ex in examples:
        if "completion_ids" in ex:
            out.append(ex)
            continue
        for side, label in ((0, True), (1, False)):
            ids = ex["chosen_ids"] if label else ex["rejected_ids"]
            row = {"prompt_ids": ex["prompt_ids"], "completion_ids": ids, "label": label}
            out.append(row | {"index": 2 * ex["index"] + side, "pair": ex["index"]})
    return out


def kl_partners(examples: list[dict], seed: int) -> list[int]:
    """For each row, the position of the row whose completion is its mismatched KL completion.

    KTO estimates KL(π_θ‖π_ref) from pairs ``(x_i, y_j)`` whose completion answers another prompt.
    TRL rotates completions by one within each batch; we fix the rotation once per split, so the
    reference log-probs of every mismatched pair can be cached with the row: rows are put in a seeded
    random order and each takes the completion of the row before it (cyclically), or of the nearest
    earlier row whose prompt differs (the two halves of an unpaired pair share a prompt). Needs at least
    two distinct prompts.
    """
    n = len(examples)
    prompts = [tuple(ex["prompt_ids"]) for ex in examples]
    if len(set(prompts)) < 2:
        raise ValueError(
            f"KTO's KL estimate pairs each row with another prompt's completion, but the split's {n} rows "
            "have fewer than two distinct prompts"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    partners = [0] * n
    for k, row in enumerate(order):
        j = 1
        while prompts[order[(k - j) % n]] == prompts[row]:
            j += 1
        partners[row] = order[(k - j) % n]
    return partners


def add_kl_completions(examples: list[dict], seed: int) -> list[dict]:
    """Unpaired rows with ``kl_completion_ids``: the completion of their :func:`kl_partners` row."""
    partners = kl_partners(examples, seed)
    return [ex | {"kl_completion_ids": examples[j]["completion_ids"]} for ex, j in zip(examples, partners)]


def collate_unpaired(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Collate unpaired rows (and their KL completions, when given) to one width T; see the docstring."""
    if not examples:
        raise ValueError("collate_unpaired got an empty list of examples")
    sides = {"completion": "completion_ids", "kl": "kl_completion_ids"}  # batch prefix -> example key
    if "kl_completion_ids" not in examples[0]:
        del sides["kl"]
    prompts = [ex["prompt_ids"] for ex in examples]
    responses = {side: [ex[key] for ex in examples] for side, key in sides.items()}
    length = max(len(p) + len(r) for s in sides for p, r in zip(prompts, responses[s]))
    batch: dict[str, torch.Tensor] = {}
    for side in sides:
        ids, mask, labels = pad_rows(prompts, responses[side], pad_token_id, length)
        batch |= {f"{side}_input_ids": ids, f"{side}_attention_mask": mask, f"{side}_labels": labels}
    batch["desirable"] = torch.tensor([bool(ex["label"]) for ex in examples], dtype=torch.bool)
    batch["pair_ids"] = torch.tensor([ex.get("pair", -1) for ex in examples], dtype=torch.long)
    batch["index"] = torch.tensor([ex["index"] for ex in examples], dtype=torch.long)
    return batch


def as_pair_batch(batch: dict, kl: bool = True) -> dict[str, torch.Tensor]:
    """An unpaired batch viewed as a pair batch: ``chosen_*`` = prompt + completion, ``rejected_*`` =
    prompt + KL completion (when ``kl``), so pair machinery (shared-prompt packing, reference caching,
    token counting) runs on it unchanged. Only the names change; "chosen" means nothing here."""
    sides = (("chosen", "completion"), ("rejected", "kl")) if kl else (("chosen", "completion"),)
    keys = ("input_ids", "attention_mask", "labels")
    return {f"{new}_{k}": batch[f"{old}_{k}"] for new, old in sides for k in keys} | {"index": batch["index"]}

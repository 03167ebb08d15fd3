"""Pure collate functions: tokenised examples -> right-padded tensors with masked labels.

An example is a dict of token-id lists produced by the datamodule:

* SFT:       ``{"prompt_ids", "chosen_ids", "index"}``
* pairwise:  ``{"prompt_ids", "chosen_ids", "rejected_ids", "index"}`` (+ ``chosen_score``,
  ``rejected_score`` floats for scored pairs)
* listwise:  ``{"prompt_ids", "response_ids": [[...], ...], "scores": [...], "index"}``

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
``index`` (B,) and ``list_size`` n.
"""

from __future__ import annotations

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

"""Per-token log-probs as ``TokenLogps`` (flat tokens + owner rows): placement and gradients, and the full-logits
path never letting a non-finite logit at an unsupervised position into the values."""

from __future__ import annotations

import torch

from prefdistill.models.logprobs import TokenLogps, _naive_logps, naive_response_token_logps


def test_padded_places_each_rows_tokens_in_order_whatever_the_row_order():
    # rows 1 and 0 interleaved by owner blocks, as the shared-prompt forward emits [c0, r0, c1, r1]
    flat = TokenLogps(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), torch.tensor([1, 1, 0, 2, 2]), 3,
                      torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]))  # fmt: skip
    values, mask, sq = flat.padded()
    torch.testing.assert_close(values, torch.tensor([[3.0, 0.0], [1.0, 2.0], [4.0, 5.0]]))
    assert mask.tolist() == [[True, False], [True, True], [True, True]]
    torch.testing.assert_close(sq, torch.tensor([[0.3, 0.0], [0.1, 0.2], [0.4, 0.5]]))
    torch.testing.assert_close(flat.sums(), torch.tensor([3.0, 3.0, 9.0]))
    assert flat.counts().tolist() == [1, 2, 2]


def test_padded_keeps_the_gradient_path():
    values = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    padded, mask, _ = TokenLogps(values, torch.tensor([0, 1, 1]), 2).padded()
    (padded * torch.tensor([[1.0, 7.0], [2.0, 3.0]])).sum().backward()
    torch.testing.assert_close(values.grad, torch.tensor([1.0, 2.0, 3.0]))


class _NanAtPadding(torch.nn.Module):
    """A 'model' whose logits are NaN wherever the attention mask is 0 (some kernels do this on padding)."""

    def __init__(self, vocab=5):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab))

    def forward(self, input_ids, attention_mask, position_ids=None):
        logits = self.table[input_ids]
        return type("Out", (), {"logits": torch.where(attention_mask[..., None].bool(), logits, float("nan"))})()


def test_full_logits_path_selects_supervised_positions_instead_of_multiplying():
    model = _NanAtPadding()
    ids = torch.tensor([[1, 2, 3, 0], [1, 4, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    labels = torch.tensor([[-100, 2, 3, -100], [-100, 4, -100, -100]])
    logps, mask = naive_response_token_logps(model, ids, attention, labels)
    assert torch.isfinite(logps).all() and mask.tolist() == (labels != -100).tolist()
    logps.sum().backward()
    assert torch.isfinite(model.table.grad).all()
    _, _, sq = _naive_logps(model, ids, attention, labels, None, True)
    assert torch.isfinite(sq).all()

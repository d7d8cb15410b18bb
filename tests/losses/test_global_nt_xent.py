import math

import pytest
import torch

from constcl.losses import global_nt_xent
from tests.losses.naive import naive_global


@pytest.mark.parametrize("batch", [1, 2, 7])
def test_global_loss_equals_naive_loop(batch):
    gen = torch.Generator().manual_seed(batch)
    a = torch.randn(batch, 16, generator=gen, requires_grad=True)
    b = torch.randn(batch, 16, generator=gen, requires_grad=True)
    out = global_nt_xent(a, b, temperature=0.1)
    ref = naive_global(a, b, 0.1)
    torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out["loss"], (a, b))
    ref_grads = torch.autograd.grad(ref, (a, b))
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_global_loss_two_videos_by_hand():
    # a1 = b1 = (1, 0) and a2 = b2 = (0, 1) (scaled, to check the normalisation).
    # Anchor a1: positive a1.b1 = 1; negatives a1.b2 = 0 and a1.a2 = 0. With tau = 0.5:
    # l = -log(e^2 / (e^2 + 2)) = log(1 + 2 e^-2); all four anchors alike, so
    # L = mean over a + mean over b = 2 log(1 + 2 e^-2).
    a = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    b = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    out = global_nt_xent(a, b, temperature=0.5)
    assert out["loss"].item() == pytest.approx(2 * math.log(1 + 2 * math.exp(-2)), rel=1e-6)
    assert out["accuracy"].item() == 1.0
    # entropy of softmax([2, 0]) per row: p = e^2 / (e^2 + 1)
    p = math.exp(2) / (math.exp(2) + 1)
    assert out["entropy"].item() == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)),
                                                  rel=1e-5)


def test_global_accuracy_counts_wrong_argmax():
    # row 0: a0.b0 = 0 < a0.b1 = 0.6 -> wrong; row 1: a1.b1 = 0.8 > a1.b0 = 0 -> right
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])
    assert global_nt_xent(a, b)["accuracy"].item() == 0.5


def test_global_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="emb_a"):
        global_nt_xent(torch.zeros(3, 4), torch.zeros(2, 4))

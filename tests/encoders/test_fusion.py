"""Fusion model and losses: TransH geometry, output shapes, loss behaviour."""

from __future__ import annotations

import torch

from encoders import losses
from encoders.fusion import FusionExport, FusionModel, transh_project


def test_transh_projection_lies_on_the_hyperplane_and_is_idempotent() -> None:
    torch.manual_seed(0)
    w = torch.nn.functional.normalize(torch.randn(16), dim=0)
    e = torch.randn(5, 16)
    p = transh_project(e, w)
    torch.testing.assert_close(p @ w, torch.zeros(5), atol=1e-6, rtol=0)
    torch.testing.assert_close(transh_project(p, w), p)


def test_fusion_outputs() -> None:
    torch.manual_seed(0)
    fusion = FusionModel(image_dim=12, text_dim=10, hidden_dim=8, embedding_dim=6)
    embedding, logit, a_image, _ = fusion(torch.randn(4, 12), torch.randn(4, 10))
    assert embedding.shape == (4, 6) and logit.shape == (4,)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(a_image.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(fusion.unit_normal().norm(), torch.tensor(1.0))
    emb2, prob = FusionExport(fusion)(torch.randn(3, 12), torch.randn(3, 10))
    assert ((prob >= 0) & (prob <= 1)).all() and emb2.shape == (3, 6)


def test_triplet_loss_is_zero_when_positives_are_closer_by_the_margin() -> None:
    eye = torch.eye(4)
    assert losses.triplet_loss(eye, eye, torch.eye(4, dtype=torch.bool), 0.3).item() == 0.0
    # Each anchor equals another pair's positive and is orthogonal to its own: the violating
    # triplets are 1.3 (that negative) and 0.3 (the two orthogonal ones), mean 1.9 / 3.
    swapped = eye.roll(1, dims=0)
    loss = losses.triplet_loss(eye, swapped, torch.eye(4, dtype=torch.bool), 0.3).item()
    assert abs(loss - 1.9 / 3) < 1e-5


def test_triplet_loss_ignores_masked_negatives() -> None:
    anchor = torch.eye(2)
    positive = torch.eye(2).roll(1, dims=0)
    all_same = torch.ones(2, 2, dtype=torch.bool)
    assert losses.triplet_loss(anchor, positive, all_same, 0.3).item() == 0.0


def test_alignment_prefers_own_title_and_mismatch_loss_is_bce() -> None:
    torch.manual_seed(0)
    fusion = FusionModel(4, 4, 8, 4)
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    with torch.no_grad():
        fusion.translation.zero_()
    aligned = losses.transh_alignment_loss(fusion, a, a, margin=0.5)
    shuffled = losses.transh_alignment_loss(fusion, a, a.roll(2, dims=0), margin=0.5)
    assert aligned < shuffled
    logit = torch.tensor([10.0, -10.0])
    assert losses.mismatch_loss(logit, torch.tensor([True, False])).item() < 1e-3
    assert losses.mismatch_loss(logit, torch.tensor([False, True])).item() > 5

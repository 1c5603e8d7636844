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


def test_cover_vectors_rank_titles_like_the_adapters_and_mix_appearance_for_photos() -> None:
    torch.manual_seed(0)
    fusion = FusionModel(12, 10, 8, 6, appearance_dim=5)
    fusion.set_feature_statistics(torch.randn(50, 12) * 3 + 1)
    with torch.no_grad():
        fusion.appearance.weight.add_(0.1 * torch.randn(5, 5))
    with torch.no_grad():
        fusion.appearance_weight.fill_(2.0)
    image, text = torch.randn(7, 12), torch.randn(4, 10)
    covers, queries = fusion.cover_vector(image), fusion.text_query_vector(text)
    assert covers.shape == (7, 13) == (7, fusion.shared_dim) and queries.shape == (4, 13)
    torch.testing.assert_close(covers.norm(dim=1), torch.ones(7))
    torch.testing.assert_close(queries.norm(dim=1), torch.ones(4))
    a_image, a_text = fusion.adapt(image, text[:1].expand(7, -1))
    # Text queries: the cosines of the title-aligned part over a constant, so the same ranking.
    torch.testing.assert_close(queries[:1] @ covers.T, (a_text[:1] @ a_image.T) / 5**0.5)
    # Photo queries: appearance weighs α² = 4 to one.
    s = fusion.appearance_vector(image)
    torch.testing.assert_close(covers @ covers.T, (4 * s @ s.T + a_image @ a_image.T) / 5)


def test_without_an_appearance_head_cover_vectors_are_the_adapters_output() -> None:
    torch.manual_seed(0)
    fusion = FusionModel(12, 10, 8, 6)
    image, text = torch.randn(3, 12), torch.randn(3, 10)
    a_image, a_text = fusion.adapt(image, text)
    torch.testing.assert_close(fusion.cover_vector(image), a_image)
    torch.testing.assert_close(fusion.text_query_vector(text), a_text)
    assert fusion.shared_dim == 8


def test_appearance_loss_is_low_when_groups_cluster_and_zero_without_positives() -> None:
    generator = torch.Generator().manual_seed(1)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=generator), dim=1)
    group = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    clustered = centres[group]
    scattered = centres[torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])]
    low = losses.appearance_loss(clustered, group, 0.1)
    assert low < losses.appearance_loss(scattered, group, 0.1)
    singles = losses.appearance_loss(clustered, torch.arange(8), 0.1)
    assert singles.item() == 0.0


def test_appearance_whitening_decorrelates_the_training_features() -> None:
    torch.manual_seed(0)
    fusion = FusionModel(12, 10, 8, 6, appearance_dim=5)
    features = torch.randn(200, 12) @ torch.randn(12, 12) + 2.0
    fusion.set_feature_statistics(features, power=1.0)
    z = (torch.nn.functional.normalize(features, dim=-1) - fusion.feature_mean) @ fusion.whitening
    torch.testing.assert_close(z.T @ z, torch.eye(5), atol=1e-4, rtol=0)
    # The learned map starts as the identity, so the head starts as the whitening itself.
    torch.testing.assert_close(
        fusion.appearance_vector(features), torch.nn.functional.normalize(z, dim=-1)
    )

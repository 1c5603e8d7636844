"""The five training losses (formulas in ``docs/model.md``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from encoders.fusion import FusionModel


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, same: torch.Tensor, margin: float
) -> torch.Tensor:
    """Batch-all triplet loss on co-clicked pairs with in-batch negatives.

    ``anchor[i]`` and ``positive[i]`` are L2-normalised embeddings of a co-clicked pair; every
    ``positive[j]`` with ``same[i, j]`` false is a negative for anchor ``i``. Distance is
    ``1 - cos``. The mean is over the triplets that still violate the margin, so easy negatives
    do not dilute the gradient as training progresses.
    """
    d_pos = 1.0 - (anchor * positive).sum(-1)  # [B]
    d_all = 1.0 - anchor @ positive.T  # [B, B]
    hinge = F.relu(margin + d_pos.unsqueeze(1) - d_all) * (~same).float()
    active = (hinge > 1e-9).sum().clamp(min=1)
    return hinge.sum() / active


def transh_alignment_loss(
    fusion: FusionModel, a_image: torch.Tensor, a_text: torch.Tensor, margin: float
) -> torch.Tensor:
    """Margin ranking on the TransH hyperplane: a listing's own title beats another's.

    ``relu(margin + ‖p_i + d - p_t‖² - ‖p_i + d - p_t'‖²)`` where ``t'`` is the title of the next
    listing in the batch. Only listings whose image matches their title (clicked) take part.
    """
    if a_image.shape[0] < 2:
        return a_image.sum() * 0.0
    own = fusion.delta(a_image, a_text).pow(2).sum(-1)
    other = fusion.delta(a_image, a_text.roll(1, dims=0)).pow(2).sum(-1)
    return F.relu(margin + own - other).mean()


def mismatch_loss(
    logit: torch.Tensor, no_click: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy of the mismatch head against the no-click label.

    ``weight`` undoes class-balanced sampling: rows drawn at twice their natural rate weigh half.
    """
    return F.binary_cross_entropy_with_logits(logit, no_click.float(), weight=weight)


def contrastive_loss(
    a_image: torch.Tensor, a_text: torch.Tensor, logit_scale: torch.Tensor, same: torch.Tensor
) -> torch.Tensor:
    """Symmetric in-batch InfoNCE between covers and titles (CLIP-style).

    ``a_image[i]`` and ``a_text[i]`` are unit vectors of one listing whose cover shows its title;
    every other title (cover) in the batch is a negative for cover (title) ``i``, except those
    with ``same[i, j]`` true (the same title, or another variant of the same product), which
    are masked out rather than pushed away. The temperature is learned, capped at 1/100.
    """
    if a_image.shape[0] < 2:
        return a_image.sum() * 0.0
    scale = logit_scale.clamp(max=math.log(100.0)).exp()
    logits = scale * a_image @ a_text.T
    eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def appearance_loss(vectors: torch.Tensor, group: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss: covers of one group (product, or co-click component) close.

    ``vectors`` are unit appearance vectors, ``group[i]`` the group of row ``i``. For every row
    with another row of its group in the batch, the mean over those positives of
    ``-log softmax`` of the cosine over every other row, at ``temperature``.
    """
    n = vectors.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=vectors.device)
    positive = (group[:, None] == group[None, :]) & ~eye
    has = positive.any(1)
    if not bool(has.any()):
        return vectors.sum() * 0.0
    logits = (vectors @ vectors.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    per_row = -(log_prob.masked_fill(~positive, 0.0)).sum(1)[has] / positive.sum(1)[has]
    return per_row.mean()

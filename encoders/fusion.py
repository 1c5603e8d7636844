"""Fusion: the Siamese item tower, the TransH hyperplane and the mismatch head (torch only).

For a listing with image features ``f_i`` and text features ``f_t``:

* adapters map each modality to a unit vector in a shared ``hidden_dim`` space: ``a_i``, ``a_t``;
* TransH: with a learned unit normal ``w`` and translation ``d``, each is projected onto the
  hyperplane, ``p = a - (wᵀa) w``, and ``delta = p_i + d - p_t`` measures how far the image is
  from depicting the title;
* the item tower (shared by every listing, hence Siamese when two listings are compared) reads
  ``[a_i ; a_t]`` and outputs the L2-normalised item embedding;
* the mismatch head reads ``delta`` and ``a_i ⊙ a_t`` and outputs the logit of P(no click).

``a_i`` and ``a_t`` are also the shared image/title space (trained with an in-batch contrastive
loss, temperature ``exp(-logit_scale)``), exported as two projection graphs for query by photo
and by text.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def transh_project(e: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Project rows of ``e`` onto the hyperplane with unit normal ``w``: ``e - (wᵀe) w``."""
    return e - (e @ w).unsqueeze(-1) * w


def _mlp(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden), nn.GELU(), nn.Linear(hidden, cout))


class FusionModel(nn.Module):
    """Image + text features -> item embedding, TransH quantities and mismatch logit."""

    def __init__(self, image_dim: int, text_dim: int, hidden_dim: int, embedding_dim: int) -> None:
        super().__init__()
        self.image_adapter = _mlp(image_dim, hidden_dim, hidden_dim)
        self.text_adapter = _mlp(text_dim, hidden_dim, hidden_dim)
        self.normal = nn.Parameter(torch.randn(hidden_dim) / hidden_dim**0.5)
        self.translation = nn.Parameter(torch.zeros(hidden_dim))
        self.tower = _mlp(2 * hidden_dim, 2 * hidden_dim, embedding_dim)
        # delta alone cannot express "how well do these two agree"; the elementwise product
        # gives the head the cosine the contrastive loss trains, per dimension.
        self.mismatch_head = _mlp(2 * hidden_dim, hidden_dim, 1)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def unit_normal(self) -> torch.Tensor:
        """``w / ‖w‖``: the hyperplane normal is kept unit-length by construction."""
        return F.normalize(self.normal, dim=0)

    def adapt(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length modality vectors ``a_i``, ``a_t``."""
        return F.normalize(self.image_adapter(image), dim=-1), F.normalize(
            self.text_adapter(text), dim=-1
        )

    def delta(self, a_image: torch.Tensor, a_text: torch.Tensor) -> torch.Tensor:
        """``p_i + d - p_t`` on the TransH hyperplane."""
        w = self.unit_normal()
        return transh_project(a_image, w) + self.translation - transh_project(a_text, w)

    def forward(
        self, image: torch.Tensor, text: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(embedding, mismatch_logit, a_image, a_text)``."""
        a_image, a_text = self.adapt(image, text)
        embedding = F.normalize(self.tower(torch.cat([a_image, a_text], dim=-1)), dim=-1)
        return embedding, self.mismatch_logit(a_image, a_text), a_image, a_text

    def mismatch_logit(self, a_image: torch.Tensor, a_text: torch.Tensor) -> torch.Tensor:
        """Logit of P(no click) from the two unit modality vectors."""
        features = torch.cat([self.delta(a_image, a_text), a_image * a_text], dim=-1)
        return self.mismatch_head(features).squeeze(-1)


class FusionExport(nn.Module):
    """The serving graph: features -> ``(embedding, P(no click))``."""

    def __init__(self, fusion: FusionModel) -> None:
        super().__init__()
        self.fusion = fusion

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, logit, _, _ = self.fusion(image, text)
        return embedding, torch.sigmoid(logit)


class ImageProjection(nn.Module):
    """The serving graph for query by photo: image features -> unit vector in the shared space."""

    def __init__(self, fusion: FusionModel) -> None:
        super().__init__()
        self.adapter = fusion.image_adapter

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.adapter(image), dim=-1)


class TextProjection(nn.Module):
    """The serving graph for query by text: text features -> unit vector in the shared space."""

    def __init__(self, fusion: FusionModel) -> None:
        super().__init__()
        self.adapter = fusion.text_adapter

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.adapter(text), dim=-1)

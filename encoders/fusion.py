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

With ``appearance_dim > 0`` the image side also has an *appearance* head ``s_i`` (PCA whitening
of the features, fitted on the training covers, then a linear map trained so that co-clicked
covers, e.g. colour variants of one product, are close). A cover's vector in the shared space
is then ``[α s_i ; a_i] / √(1 + α²)`` and a text query's ``[0 ; a_t]``: text-to-cover cosines
are those of ``a`` divided by a constant (same ranking), while photo-to-cover cosines weigh
appearance ``α²`` to one against the title-aligned part.
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

    feature_mean: torch.Tensor
    whitening: torch.Tensor
    appearance_weight: torch.Tensor
    appearance: nn.Linear

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        hidden_dim: int,
        embedding_dim: int,
        appearance_dim: int = 0,
    ) -> None:
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
        self.appearance_dim = appearance_dim
        if appearance_dim:
            # PCA whitening of the unit-length frozen features, fitted on the training covers
            # (buffers, so checkpoints and exports carry it), then a learned square map that
            # starts as the identity: whitening alone already separates products better than
            # the raw features, and training only has to refine it.
            self.register_buffer("feature_mean", torch.zeros(image_dim))
            self.register_buffer("whitening", torch.eye(image_dim, appearance_dim))
            self.register_buffer("appearance_weight", torch.tensor(1.0))
            self.appearance = nn.Linear(appearance_dim, appearance_dim, bias=False)
            with torch.no_grad():
                self.appearance.weight.copy_(torch.eye(appearance_dim))

    def set_feature_statistics(self, features: torch.Tensor, power: float = 0.75) -> None:
        """Fit the appearance head's whitening on these (training) features: centre the unit
        vectors, project on the top principal axes, divide by singular value ** ``power``."""
        if not self.appearance_dim:
            return
        with torch.no_grad():
            unit = F.normalize(features.float(), dim=-1)
            mean = unit.mean(0)
            _, singular, axes = torch.linalg.svd(unit - mean, full_matrices=False)
            k = min(self.appearance_dim, len(singular))
            scale = singular[:k].clamp(min=1e-6 * float(singular[0])) ** power
            whitening = torch.zeros_like(self.whitening)
            whitening[:, :k] = axes[:k].T / scale
            self.feature_mean.copy_(mean)
            self.whitening.copy_(whitening)

    def appearance_vector(self, image: torch.Tensor) -> torch.Tensor:
        """``s_i``: unit vectors in which co-clicked covers are close (needs appearance_dim)."""
        z = (F.normalize(image, dim=-1) - self.feature_mean) @ self.whitening
        return F.normalize(self.appearance(z), dim=-1)

    @property
    def shared_dim(self) -> int:
        """Width of the cover and query vectors of the shared space."""
        last = self.image_adapter[-1]
        assert isinstance(last, nn.Linear)
        return self.appearance_dim + last.out_features

    def cover_vector(self, image: torch.Tensor) -> torch.Tensor:
        """A cover (or photo query) in the shared space: ``[α s_i ; a_i] / √(1 + α²)``."""
        a_image = F.normalize(self.image_adapter(image), dim=-1)
        if not self.appearance_dim:
            return a_image
        alpha = self.appearance_weight
        both = torch.cat([alpha * self.appearance_vector(image), a_image], dim=-1)
        return both / torch.sqrt(1.0 + alpha * alpha)

    def text_query_vector(self, text: torch.Tensor) -> torch.Tensor:
        """A title or text query in the shared space: ``[0 ; a_t]``."""
        a_text = F.normalize(self.text_adapter(text), dim=-1)
        if not self.appearance_dim:
            return a_text
        return torch.cat([a_text.new_zeros(a_text.shape[0], self.appearance_dim), a_text], -1)

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
        self.fusion = fusion

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fusion.cover_vector(image)


class TextProjection(nn.Module):
    """The serving graph for query by text: text features -> unit vector in the shared space."""

    def __init__(self, fusion: FusionModel) -> None:
        super().__init__()
        self.fusion = fusion

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.fusion.text_query_vector(text)

"""Held-out metrics: co-click recall@k, mismatch ROC-AUC per negative kind, image->title top-1.

Numpy only: training computes the features with torch, `vitrine evaluate` with the served ONNX
graphs, and both hand them to :func:`evaluate_heldout`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from encoders.negatives import ListingMeta, heldout_swaps


def recall_at_k(vectors: np.ndarray, pairs: np.ndarray, k: int = 10) -> tuple[float, int]:
    """Mean over query listings of the share of their co-clicked partners in their top ``k``.

    ``vectors`` are the held-out listings (row i = listing i); ``pairs`` index into them. Every
    listing with at least one partner is a query; the corpus is every other held-out listing;
    ranking is by cosine similarity. Returns ``(recall, number_of_queries)``.
    """
    if len(pairs) == 0:
        return 0.0, 0
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    partners: dict[int, set[int]] = {}
    for a, b in pairs:
        partners.setdefault(int(a), set()).add(int(b))
        partners.setdefault(int(b), set()).add(int(a))
    queries = np.asarray(sorted(partners))
    scores = unit[queries] @ unit.T
    scores[np.arange(len(queries)), queries] = -np.inf  # a listing never recalls itself
    k = min(k, unit.shape[0] - 1)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    recalls = [
        len(partners[int(q)] & set(top[i].tolist())) / len(partners[int(q)])
        for i, q in enumerate(queries)
    ]
    return float(np.mean(recalls)), len(queries)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney form, ties count one half); NaN if one class."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def image_to_title_top1(
    image: np.ndarray, text: np.ndarray, titles: np.ndarray, pool: int, seed: int
) -> dict[str, float | int]:
    """Share of covers whose nearest title (cosine, shared space) is their own.

    Candidates are random pools of ``pool`` listings (each listing in exactly one pool; a last
    short pool is dropped), and also every listing at once (``all``). A retrieved title equal
    to the cover's own title counts as correct (catalogues repeat titles).
    """
    n = len(image)
    if n < 2:
        nan = float("nan")
        return {"pool": pool, "accuracy": nan, "pools": 0, "all": nan, "all_size": n}

    def top1(rows: np.ndarray) -> np.ndarray:
        best = np.argmax(image[rows] @ text[rows].T, axis=1)
        return titles[rows[best]] == titles[rows]

    order = np.random.default_rng(seed).permutation(n)
    pools = [order[s : s + pool] for s in range(0, n - pool + 1, pool)]
    hits = np.concatenate([top1(rows) for rows in pools]) if pools else np.zeros(0, bool)
    return {
        "pool": pool,
        "accuracy": float(hits.mean()) if len(hits) else float("nan"),
        "pools": len(pools),
        "all": float(top1(np.arange(n)).mean()),
        "all_size": n,
    }


@dataclass(frozen=True)
class HeldOut:
    """Features and labels of the held-out listings (rows aligned; pairs index the rows)."""

    image: np.ndarray  # raw image-tower features
    text: np.ndarray  # raw text-tower features
    clicked: np.ndarray  # bool
    pairs: np.ndarray  # int64 [P, 2] co-click pairs among the rows
    meta: ListingMeta


Fuse = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # -> embedding, score
Project = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # -> shared i, t


def evaluate_heldout(
    held: HeldOut, fuse: Fuse, project: Project, seed: int = 0, pool: int = 100
) -> dict[str, Any]:
    """Every held-out figure of ``docs/model.md``: recall@10, mismatch AUC per kind, top-1."""
    embedding, own_score = fuse(held.image, held.text)
    shared_image, shared_text = project(held.image, held.text)
    multimodal, queries = recall_at_k(embedding, held.pairs)
    clicked = np.flatnonzero(held.clicked)
    auc: dict[str, float] = {}
    counts: dict[str, int] = {}
    swaps = heldout_swaps(held.meta, clicked, clicked, seed)
    for kind, (title_rows, cover_rows) in swaps.items():
        _, swapped = fuse(held.image[cover_rows], held.text[title_rows])
        scores = np.concatenate([own_score[clicked], swapped])
        labels = np.concatenate([np.zeros(len(clicked), bool), np.ones(len(swapped), bool)])
        auc[kind], counts[kind] = roc_auc(scores, labels), len(swapped)
    if (~held.clicked).any():
        auc["labelled"] = roc_auc(own_score, ~held.clicked)
        counts["labelled"] = int((~held.clicked).sum())
    return {
        "test_listings": len(held.clicked),
        "test_queries": queries,
        "test_coclick_pairs": len(held.pairs),
        "recall_at_10": {
            "multimodal": multimodal,
            "text_only": recall_at_k(held.text, held.pairs)[0],
            # What a photo query gets: the covers' vectors in the shared space.
            "image_only": recall_at_k(shared_image, held.pairs)[0],
            "image_features": recall_at_k(held.image, held.pairs)[0],
            "text_shared": recall_at_k(shared_text, held.pairs)[0],
        },
        "mismatch_roc_auc": auc,
        "mismatch_negatives": counts,
        "image_to_title_top1": image_to_title_top1(
            shared_image[clicked], shared_text[clicked], held.meta.title[clicked], pool, seed
        ),
        "no_click_share": float((~held.clicked).mean()) if len(held.clicked) else 0.0,
        "seed": seed,
    }


def format_evaluation(ev: dict[str, Any]) -> str:
    """The short text table printed by `vitrine train` and `vitrine evaluate`."""
    lines = [
        f"held-out evaluation: {ev['test_listings']} listings, {ev['test_queries']} queries, "
        f"{ev['test_coclick_pairs']} co-click pairs",
        f"{'embedding':<14} recall@10",
    ]
    lines += [
        f"{name.replace('_', '-'):<14} {value:.3f}" for name, value in ev["recall_at_10"].items()
    ]
    lines.append(f"{'negatives':<16} {'count':>6}  mismatch ROC-AUC")
    lines += [
        f"{kind.replace('_', '-'):<16} {ev['mismatch_negatives'][kind]:>6}  {value:.3f}"
        for kind, value in ev["mismatch_roc_auc"].items()
    ]
    top = ev["image_to_title_top1"]
    lines.append(
        f"image->title top-1 {top['accuracy']:.3f} in pools of {top['pool']} ({top['pools']} "
        f"pools); {top['all']:.3f} among all {top['all_size']}"
    )
    return "\n".join(lines)

"""Held-out metrics: co-click recall@k and mismatch ROC-AUC (numpy only)."""

from __future__ import annotations

import numpy as np


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

"""Held-out metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.evaluate import recall_at_k, roc_auc


def test_recall_at_k_counts_partners_in_the_top_k() -> None:
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    pairs = np.array([[0, 1], [2, 3]])
    assert recall_at_k(vectors, pairs, k=1) == (1.0, 4)
    wrong = np.array([[0, 2], [1, 3]])
    assert recall_at_k(vectors, wrong, k=1)[0] == 0.0
    assert recall_at_k(vectors, wrong, k=3)[0] == 1.0
    assert recall_at_k(vectors, np.zeros((0, 2), np.int64)) == (0.0, 0)


def test_roc_auc() -> None:
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5]), np.array([0, 1, 0])) == 0.5
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert np.isnan(roc_auc(np.array([0.1]), np.array([1])))

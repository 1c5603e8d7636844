"""Held-out metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.evaluate import (
    HeldOut,
    evaluate_heldout,
    format_evaluation,
    image_to_title_top1,
    recall_at_k,
    roc_auc,
)
from encoders.negatives import ListingMeta


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


def test_image_to_title_top1_counts_own_and_equal_titles() -> None:
    eye = np.eye(4, dtype=np.float32)
    titles = np.array([0, 1, 2, 3])
    assert image_to_title_top1(eye, eye, titles, pool=2, seed=0)["accuracy"] == 1.0
    shifted = np.roll(eye, 1, axis=0)  # every cover is nearest to the next listing's title
    result = image_to_title_top1(eye, shifted, titles, pool=4, seed=0)
    assert result["accuracy"] == 0.0 and result["all"] == 0.0 and result["pools"] == 1
    # Equal titles count as correct: listings 0 and 1 share a title.
    same = image_to_title_top1(eye, shifted, np.array([0, 0, 1, 2]), pool=4, seed=0)
    assert same["all"] == 0.25


def _held(n_products: int = 6) -> HeldOut:
    """Two listings (colours) per product, three categories; features encode the identity."""
    rng = np.random.default_rng(0)
    n = 2 * n_products
    titles = [f"product {i // 2} colour {i % 2}" for i in range(n)]
    categories = [f"c{(i // 2) % 3}" for i in range(n)]
    products = [f"p{i // 2}" for i in range(n)]
    pairs = np.array([[2 * k, 2 * k + 1] for k in range(n_products)])
    image = rng.normal(size=(n, 8)).astype(np.float32)
    text = image + 0.01
    meta = ListingMeta.build(titles, categories, products, pairs)
    return HeldOut(image, text, np.ones(n, bool), pairs, meta)


def test_evaluate_heldout_with_an_oracle_and_a_blind_scorer() -> None:
    held = _held()

    def project(i: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        unit = i / np.linalg.norm(i, axis=1, keepdims=True)
        return unit, unit

    def oracle(i: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Mismatch = distance between cover and title features; the embedding is the title.
        return t, np.linalg.norm(i - t + 0.01, axis=1)

    def blind(i: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return t, np.full(len(i), 0.5, np.float32)

    good = evaluate_heldout(held, oracle, project, seed=1, pool=4)
    assert set(good["mismatch_roc_auc"]) == {"other_category", "same_category", "same_product"}
    assert all(v == 1.0 for v in good["mismatch_roc_auc"].values())
    assert good["image_to_title_top1"]["accuracy"] == 1.0
    assert good["test_queries"] == 12
    bad = evaluate_heldout(held, blind, project, seed=1, pool=4)
    assert all(v == 0.5 for v in bad["mismatch_roc_auc"].values())
    text = format_evaluation(good)
    assert "same-product" in text and "image->title top-1 1.000" in text

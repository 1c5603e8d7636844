"""`vitrine evaluate`: the held-out figures of a served model directory on a data directory.

Runs the exported ONNX graphs through :class:`encoders.runtime.Encoder` (no torch), on covers
decoded with the serving preprocessing, so the figures are those of the model as deployed.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from encoders.dataset import MarketplaceData, load_data, read_cover
from encoders.evaluate import HeldOut, evaluate_heldout, format_evaluation
from encoders.negatives import ListingMeta
from encoders.preprocess import to_tensor
from encoders.runtime import Encoder

BATCH = 64


def _rows(data: MarketplaceData, split: str) -> np.ndarray:
    if split == "all":
        return np.arange(len(data.listings), dtype=np.int64)
    return data.indices(split)


def served_features(
    encoder: Encoder, data: MarketplaceData, rows: np.ndarray, progress: bool, threads: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Image and text tower features of ``rows``, as the served graphs compute them."""
    from PIL import Image

    spec = encoder.image_spec
    listings = [data.listings[int(i)] for i in rows]

    def pixels(i: int) -> np.ndarray:
        return to_tensor(Image.fromarray(read_cover(data, listings[i], spec)), spec)

    image, text = [], []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in tqdm(range(0, len(rows), BATCH), desc="served features", disable=not progress):
            part = range(start, min(start + BATCH, len(rows)))
            image.append(encoder.image_features(np.stack(list(pool.map(pixels, part)))))
            text.append(encoder.text_features([listings[i].title for i in part]))
    if not image:
        return (
            np.zeros((0, encoder.manifest.image_feature_dim), np.float32),
            np.zeros((0, encoder.manifest.text_feature_dim), np.float32),
        )
    return np.concatenate(image), np.concatenate(text)


def evaluate_model_dir(
    model_dir: Path,
    data_dir: Path,
    *,
    split: str = "test",
    seed: int = 0,
    pool: int = 100,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model_dir`` on the ``split`` listings (``test`` or ``all``) of ``data_dir``."""
    started = time.monotonic()
    encoder = Encoder.load(model_dir)
    data = load_data(data_dir)
    rows = _rows(data, split)
    image, text = served_features(encoder, data, rows, progress)
    position = {int(g): i for i, g in enumerate(rows)}
    pairs = np.asarray(
        [
            (position[int(a)], position[int(b)])
            for a, b in data.pairs
            if int(a) in position and int(b) in position
        ],
        np.int64,
    ).reshape(-1, 2)
    listings = [data.listings[int(i)] for i in rows]
    meta = ListingMeta.build(
        [x.title for x in listings],
        [x.category for x in listings],
        [x.product for x in listings],
        pairs,
    )
    held = HeldOut(image, text, np.asarray([x.clicked for x in listings], bool), pairs, meta)

    def fuse(i: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = encoder.fuse(i, t)
        return result.embeddings, result.mismatch

    def project(i: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return encoder.project_image_features(i), encoder.project_text_features(t)

    evaluation = evaluate_heldout(held, fuse, project, seed=seed, pool=pool)
    return {
        "model_version": encoder.manifest.model_version,
        "model_dir": str(model_dir),
        "data": str(data_dir),
        "split": split,
        "evaluation": evaluation,
        "seconds": round(time.monotonic() - started, 1),
    }


def write_evaluation(result: dict[str, Any], out_dir: Path) -> None:
    """``evaluation.json`` and ``evaluation.txt`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "evaluation.txt").write_text(format_evaluation(result["evaluation"]) + "\n")

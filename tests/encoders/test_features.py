"""The frozen-tower feature cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import features
from encoders.dataset import load_data
from encoders.profiles import get_profile
from encoders.synth import SynthConfig, generate
from encoders.towers import build_towers, normalise


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("features-data")
    generate(out, SynthConfig(listings=40, seed=3, image_size=72), progress=False)
    return out


@pytest.fixture(scope="module")
def towers(tiny_bert_dir: Path):
    torch.manual_seed(0)
    return build_towers(get_profile("tiny"), str(tiny_bert_dir), None)


def test_features_match_the_trunk_and_are_cached(
    small_data: Path, towers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_data(small_data)
    first = features.image_features(towers, data, cache_dir=tmp_path, progress=False)
    spec = towers.profile.image_spec()
    from encoders.dataset import read_cover

    pixels = np.stack([read_cover(data, x, spec) for x in data.listings[:4]])
    with torch.no_grad():
        direct = towers.trunk.eval()(normalise(pixels, spec)).numpy()
    np.testing.assert_allclose(first[:4], direct, rtol=1e-4, atol=1e-5)
    assert len(list(tmp_path.glob("image-pooled-*.npy"))) == 1

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(features, "_onnx_runner", fail)
    again = features.image_features(towers, data, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(first, again)


def test_a_changed_cover_invalidates_the_cache(small_data: Path, towers, tmp_path: Path) -> None:
    data = load_data(small_data)
    features.image_features(towers, data, cache_dir=tmp_path, progress=False)
    cover = small_data / data.listings[0].image
    stat = cover.stat()
    os.utime(cover, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))
    features.image_features(towers, data, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("image-pooled-*.npy"))) == 2


def test_body_cache_and_text_cache(small_data: Path, towers, tmp_path: Path) -> None:
    data = load_data(small_data)
    body = features.image_features(towers, data, body_only=True, cache_dir=tmp_path, progress=False)
    assert body.dtype == np.float16 and body.ndim == 4
    with torch.no_grad():
        pooled = towers.trunk.tail(torch.from_numpy(body[:3]).float()).numpy()
    direct = features.image_features(towers, data, cache_dir=None, progress=False)[:3]
    np.testing.assert_allclose(pooled, direct, rtol=0.02, atol=0.02)
    titles = [x.title for x in data.listings]
    text = features.text_features(towers, titles, cache_dir=tmp_path, progress=False)
    assert text.shape == (len(titles), towers.text.feature_dim)
    assert len(list(tmp_path.glob("text-*.npy"))) == 1
    np.testing.assert_array_equal(
        text, features.text_features(towers, titles, cache_dir=tmp_path, progress=False)
    )


def test_an_unreadable_cache_file_is_recomputed(small_data: Path, towers, tmp_path: Path) -> None:
    data = load_data(small_data)
    first = features.image_features(towers, data, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("image-pooled-*.npy")
    path.write_bytes(b"not numpy")
    again = features.image_features(towers, data, cache_dir=tmp_path, progress=False)
    np.testing.assert_allclose(first, again, rtol=1e-6)

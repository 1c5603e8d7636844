"""The synthetic marketplace and the training data format reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from encoders.dataset import load_data, load_images
from encoders.errors import DataError
from encoders.preprocess import ImageSpec
from encoders.synth import SynthConfig, categories, generate

CONFIG = SynthConfig(listings=120, seed=3, image_size=64)


def _digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("synth")
    generate(directory, CONFIG, progress=False)
    return directory


def test_same_seed_same_files(synth_dir: Path, tmp_path: Path) -> None:
    generate(tmp_path / "again", CONFIG, progress=False)
    assert _digest(tmp_path / "again") == _digest(synth_dir)
    generate(tmp_path / "other", SynthConfig(listings=120, seed=4, image_size=64), progress=False)
    assert _digest(tmp_path / "other") != _digest(synth_dir)


def test_synthetic_marketplace_has_the_promised_structure(synth_dir: Path) -> None:
    data = load_data(synth_dir)
    assert len(data.listings) == 120
    swapped = [x for x in data.listings if not x.clicked]
    assert 5 <= len(swapped) <= 35
    assert {x.split for x in data.listings} == {"train", "test"}
    assert len(data.pairs) > 0
    group_of = {name: group for name, group, _ in categories()}
    for a, b in data.pairs:
        la, lb = data.listings[a], data.listings[b]
        assert la.category == lb.category and la.split == lb.split
        assert la.clicked and lb.clicked
    # Titles never name the category within a group: only group vocabulary is used.
    assert all(group_of[x.category].rstrip("s")[:4] not in {"toy", "prin"} for x in data.listings)
    assert not any("toy" in x.title or "print" in x.title for x in data.listings)


def test_images_decode_through_the_serving_preprocessing(synth_dir: Path) -> None:
    data = load_data(synth_dir)
    pixels = load_images(data, ImageSpec(32, 36), progress=False)
    assert pixels.shape == (120, 32, 32, 3) and pixels.dtype == np.uint8


def _write(directory: Path, listings: list[dict], pairs: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "listings.jsonl").write_text("".join(json.dumps(x) + "\n" for x in listings))
    (directory / "coclicks.csv").write_text("listing_a,listing_b\n" + pairs)
    return directory


def test_split_defaults_to_id_hash_and_cross_split_pairs_are_dropped(tmp_path: Path) -> None:
    listings = [{"listing_id": f"x{i}", "title": "t", "image": "i.jpg", "clicked": True}
                for i in range(200)]  # fmt: skip
    pairs = "".join(f"x{i},x{i + 1}\n" for i in range(199))
    data = load_data(_write(tmp_path, listings, pairs))
    shares = len(data.indices("test")) / 200
    assert 0.1 < shares < 0.3
    assert all(data.listings[a].split == data.listings[b].split for a, b in data.pairs)


@pytest.mark.parametrize(
    ("listings", "pairs"),
    [
        ([{"listing_id": "a", "title": "t", "image": "i.jpg"}], ""),
        ([{"listing_id": "a", "title": "t", "image": "i", "clicked": 1, "split": "dev"}], ""),
        ([{"listing_id": "a", "title": "t", "image": "i", "clicked": 1}] * 2, ""),
        ([{"listing_id": "a", "title": "t", "image": "i", "clicked": 1}], "a,zzz\n"),
    ],
    ids=["no-clicked", "bad-split", "duplicate", "unknown-pair"],
)
def test_invalid_data_is_a_data_error(tmp_path: Path, listings, pairs) -> None:
    with pytest.raises(DataError):
        load_data(_write(tmp_path, listings, pairs))


def test_missing_files_and_images(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_data(tmp_path)
    assert info.value.reason == "data_missing"
    data = load_data(
        _write(tmp_path, [{"listing_id": "a", "title": "t", "image": "nope.jpg", "clicked": 1}], "")
    )
    with pytest.raises(DataError):
        load_images(data, ImageSpec(32, 36), progress=False)


def test_validation_split_moves_whole_training_groups(tmp_path: Path) -> None:
    listings = [
        {"listing_id": f"x{i}", "title": "t", "image": "i.jpg", "clicked": True,
         "split": "test" if i < 40 else "train", "product": f"p{i // 4}" if i < 160 else None}
        for i in range(200)
    ]  # fmt: skip
    pairs = "".join(f"x{i},x{i + 1}\n" for i in range(0, 160, 2))
    data = load_data(_write(tmp_path, listings, pairs))
    valid = data.with_validation(0.25, seed=0)
    assert [x.split for x in valid.listings[:40]] == ["test"] * 40  # the test split is untouched
    moved = valid.indices("validation")
    groups = data.meta().group
    # Whole groups: 30 products + 40 singles in train, a quarter of them moved.
    assert len(np.unique(groups[moved])) == round(0.25 * 70)
    assert not set(groups[moved]) & set(groups[valid.indices("train")])
    assert all(valid.listings[a].split == valid.listings[b].split for a, b in valid.pairs)
    assert len(valid.pairs_in("validation")) > 0
    again = data.with_validation(0.25, seed=0)
    assert [x.split for x in again.listings] == [x.split for x in valid.listings]
    with pytest.raises(DataError) as info:
        data.with_validation(1.0, seed=0)
    assert info.value.reason == "bad_input"

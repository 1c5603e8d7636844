"""The manifest: round trip, validation and checksum verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from encoders.errors import ModelError
from encoders.manifest import Manifest, sha256_file, version_from_files
from encoders.runtime import Encoder


def test_manifest_round_trips(tiny_model) -> None:
    manifest = Manifest.read(tiny_model.directory)
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    assert manifest.model_version == version_from_files(manifest.profile, manifest.files)
    assert manifest.embedding_dim == 32
    assert set(manifest.files) == {
        "image", "text", "fusion", "tokenizer", "image_projection", "text_projection"
    }  # fmt: skip
    assert manifest.shared_space["image"] == "image_projection"
    assert manifest.shared_space["text"] == "text_projection"
    # The tiny profile: 16-d appearance block + 48-d title-aligned block.
    assert manifest.shared_space["dim"] == 64 and manifest.shared_space["appearance_dim"] == 16
    for entry in manifest.files.values():
        assert sha256_file(tiny_model.directory / entry.path) == entry.sha256


def test_tampered_file_is_a_checksum_mismatch(model_copy: Path) -> None:
    with (model_copy / "fusion.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError) as info:
        Encoder.load(model_copy)
    assert info.value.reason == "checksum_mismatch"


def test_same_size_corruption_is_caught(model_copy: Path) -> None:
    path = model_copy / "tokenizer.json"
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError) as info:
        Encoder.load(model_copy)
    assert info.value.reason == "checksum_mismatch"


def test_missing_file(model_copy: Path) -> None:
    (model_copy / "text.onnx").unlink()
    with pytest.raises(ModelError) as info:
        Encoder.load(model_copy)
    assert info.value.reason == "model_file_missing"


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as info:
        Encoder.load(tmp_path / "nowhere")
    assert info.value.reason == "model_not_found"


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m.pop("embedding_dim"),
        lambda m: m.update(format_version=99),
        lambda m: m["shared_space"].update(image="nowhere"),
        lambda m: m["files"].pop("tokenizer"),
        lambda m: m["files"]["image"].update(path="../../etc/passwd"),
        lambda m: m["image"].update(size="big"),
        lambda m: m.update(embedding_dim=0),
    ],
    ids=[
        "no-dim",
        "future-format",
        "shared-role-unknown",
        "no-tokenizer",
        "escaping-path",
        "bad-size",
        "zero-dim",
    ],
)
def test_invalid_manifest(model_copy: Path, damage) -> None:
    path = model_copy / "manifest.json"
    data = json.loads(path.read_text())
    damage(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError) as info:
        Encoder.load(model_copy)
    assert info.value.reason == "manifest_invalid"


def test_unparsable_manifest(model_copy: Path) -> None:
    (model_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError) as info:
        Manifest.read(model_copy)
    assert info.value.reason == "manifest_invalid"

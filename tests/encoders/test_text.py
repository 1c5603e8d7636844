"""The text tower: fidelity to the pretrained model, and loading Hugging Face directories."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders.errors import ModelError
from encoders.text import load_text_tower
from encoders.tokenize import TitleTokenizer

REAL_TITLES = [
    "Apple iPhone 13 Pro 128GB Graphite (Unlocked) - Excellent condition",
    "Nike Air Max 90 Men's Running Shoes Size 10 White Red",
    "Vintage Leica M3 Rangefinder Camera Body, serviced 2022",
    "LEGO Star Wars 75192 Millennium Falcon Ultimate Collector Series NEW SEALED",
    'Samsung 55" Class QLED 4K Smart TV QN55Q60A',
    "IKEA KALLAX shelf unit, white, 77x147 cm",
    "Rolex Submariner Date 116610LN Black Dial Steel Watch Box & Papers",
    "Fender Player Stratocaster electric guitar, Pau Ferro, 3-Color Sunburst",
    "Patagonia Better Sweater fleece jacket women's M navy",
    "KitchenAid Artisan 5 qt stand mixer empire red - barely used",
    "Pokemon TCG Charizard 4/102 Base Set Holo Rare PSA 8",
    "Dyson V11 cordless vacuum cleaner with all attachments",
]


def _tower_embeddings(directory: Path, titles: list[str]) -> np.ndarray:
    tower = load_text_tower(directory)
    ids, mask = TitleTokenizer.from_file(directory / "tokenizer.json", 256)(titles)
    with torch.no_grad():
        out = tower(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_minilm_reproduces_sentence_transformers_embeddings(minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(
        REAL_TITLES, normalize_embeddings=True
    )
    ours = _tower_embeddings(minilm_dir, REAL_TITLES)
    assert ours.shape == (len(REAL_TITLES), 384)
    assert (ours * reference).sum(axis=1).min() >= 0.999


def test_exported_minilm_text_graph_matches_torch(minilm_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from encoders.export import _export

    tower = load_text_tower(minilm_dir)
    ids = torch.randint(1000, 2000, (2, 8))
    axes = {0: "batch", 1: "tokens"}
    _export(tower, (ids, torch.ones_like(ids)), tmp_path / "text.onnx",
            ["input_ids", "attention_mask"], ["features"],
            {"input_ids": axes, "attention_mask": axes, "features": {0: "batch"}})  # fmt: skip
    ids, mask = TitleTokenizer.from_file(minilm_dir / "tokenizer.json", 64)(REAL_TITLES)
    session = ort.InferenceSession(str(tmp_path / "text.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        ref = tower(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999


def test_loads_prefixed_checkpoint_directories(tiny_bert_dir: Path) -> None:
    tower = load_text_tower(tiny_bert_dir)
    assert tower.feature_dim == 32


def test_padding_does_not_change_a_title_embedding(tiny_bert_dir: Path) -> None:
    alone = _tower_embeddings(tiny_bert_dir, ["red car"])
    padded = _tower_embeddings(
        tiny_bert_dir, ["red car", "a much longer title that forces padding"]
    )
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_non_bert_directory_is_rejected(tiny_bert_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "gpt"
    shutil.copytree(tiny_bert_dir, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ModelError) as info:
        load_text_tower(target)
    assert info.value.reason == "weights_invalid"


def test_directory_without_weights(tmp_path: Path, tiny_bert_dir: Path) -> None:
    shutil.copyfile(tiny_bert_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError) as info:
        load_text_tower(tmp_path)
    assert info.value.reason == "model_not_found"

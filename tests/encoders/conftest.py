"""Shared fixtures: a tiny BERT directory and one tiny model directory built once per session."""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class BuiltModel:
    """A model directory plus the torch towers it was exported from."""

    directory: Path
    towers: object  # encoders.train.Towers


@pytest.fixture
def jpeg_bytes() -> bytes:
    """A small red JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", (160, 120), (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 directory."""
    from encoders.text import default_text_model_dir

    return default_text_model_dir()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A Hugging Face-format 2-layer BERT (random weights) with MiniLM's tokenizer."""
    import torch
    from safetensors.torch import save_file

    from encoders.text import BertConfig, TextTower

    directory = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    tower = TextTower(config)
    # Store with the "bert." prefix a BertForX checkpoint would have, plus an unused pooler.
    state = {f"bert.{k}": v.contiguous() for k, v in tower.state_dict().items()}
    state["bert.pooler.dense.weight"] = torch.zeros(32, 32)
    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", **config.__dict__}))
    shutil.copyfile(minilm_dir / "tokenizer.json", directory / "tokenizer.json")
    return directory


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_bert_dir: Path) -> BuiltModel:
    """An exported ``tiny``-profile model directory (untrained fusion), built once."""
    import torch

    from encoders.export import export_model
    from encoders.profiles import get_profile
    from encoders.train import build_towers

    torch.manual_seed(0)
    towers = build_towers(get_profile("tiny"), str(tiny_bert_dir), None)
    directory = tmp_path_factory.mktemp("tiny-model")
    export_model(towers, directory, {"trained": False})
    return BuiltModel(directory, towers)


@pytest.fixture
def model_copy(tiny_model: BuiltModel, tmp_path: Path) -> Path:
    """A private copy of the tiny model directory, safe to damage."""
    target = tmp_path / "model"
    shutil.copytree(tiny_model.directory, target)
    return target

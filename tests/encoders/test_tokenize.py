"""Title tokenisation matches the text model's own tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.errors import ModelError
from encoders.tokenize import TitleTokenizer


def test_matches_the_reference_tokenizer(minilm_dir: Path) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(minilm_dir))
    titles = ["Nike Air Max 90, size 10", "LEGO 75192 Millennium Falcon — sealed", ""]
    ids, mask = TitleTokenizer.from_file(minilm_dir / "tokenizer.json", 32)(titles)
    expected = reference(titles, padding=True, truncation=True, max_length=32, return_tensors="np")
    np.testing.assert_array_equal(ids, expected["input_ids"])
    np.testing.assert_array_equal(mask, expected["attention_mask"])
    assert ids.dtype == np.int64 and mask.dtype == np.int64


def test_truncates_to_max_length(minilm_dir: Path) -> None:
    ids, mask = TitleTokenizer.from_file(minilm_dir / "tokenizer.json", 12)(["word " * 50])
    assert ids.shape == (1, 12) and mask.sum() == 12


def test_rejects_non_string_titles_and_bad_files(minilm_dir: Path, tmp_path: Path) -> None:
    tokenizer = TitleTokenizer.from_file(minilm_dir / "tokenizer.json", 12)
    with pytest.raises(ModelError):
        tokenizer("a bare string")  # type: ignore[arg-type]
    with pytest.raises(ModelError):
        tokenizer(["ok", None])  # type: ignore[list-item]
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelError):
        TitleTokenizer.from_file(tmp_path / "tokenizer.json", 12)

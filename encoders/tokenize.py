"""Titles -> padded ``int64`` token ids and attention masks, with the ``tokenizers`` library.

The model directory carries the text model's own ``tokenizer.json``; the manifest fixes the
maximum length and the padding token, so serving needs neither ``transformers`` nor torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from encoders.errors import ModelError


class TitleTokenizer:
    """Batch tokeniser for listing titles; safe to share between threads."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_id: int, pad_token: str) -> None:
        self.max_length = max_length
        self.pad_id = pad_id
        tokenizer.no_padding()
        tokenizer.no_truncation()
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: Path, max_length: int) -> TitleTokenizer:
        """Load a ``tokenizer.json``; the pad token is read from it ([PAD] by default)."""
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception
            raise ModelError(
                f"cannot load tokenizer {path}: {exc}", reason="weights_invalid"
            ) from exc
        padding = tokenizer.padding or {}
        pad_token = str(padding.get("pad_token", "[PAD]"))
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ModelError(f"{path} has no pad token {pad_token!r}", reason="weights_invalid")
        return cls(tokenizer, max_length, pad_id, pad_token)

    def __call__(self, titles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)``, both ``int64 [N, T]`` with ``T <= max_length``."""
        if isinstance(titles, str) or not all(isinstance(t, str) for t in titles):
            raise ModelError("titles must be a sequence of str", reason="bad_input")
        if not titles:
            empty = np.zeros((0, 2), dtype=np.int64)
            return empty, empty.copy()
        encodings = self._tokenizer.encode_batch(list(titles))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask

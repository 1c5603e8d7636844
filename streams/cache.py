"""LRU of preprocessed cover images by sha256: the same photo is decoded once."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from streams import metrics


class ImageCache:
    """Bounded LRU ``sha256 -> float32 [3, H, W]``; 0 entries disables it."""

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, sha256: str) -> np.ndarray | None:
        """The cached tensor, refreshed as most recently used."""
        tensor = self._data.get(sha256)
        metrics.IMAGE_CACHE.labels(result="hit" if tensor is not None else "miss").inc()
        if tensor is not None:
            self._data.move_to_end(sha256)
        return tensor

    def put(self, sha256: str, tensor: np.ndarray) -> None:
        """Remember a tensor, evicting the least recently used beyond the bound."""
        if self._entries <= 0:
            return
        self._data[sha256] = tensor
        self._data.move_to_end(sha256)
        while len(self._data) > self._entries:
            self._data.popitem(last=False)

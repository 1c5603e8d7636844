"""Text and photo queries -> vectors in the model's shared image-title space.

The worker embeds a phrase with the text tower and its shared-space head, and a photo with the
serving image preprocessing, the image tower and its head (ONNX Runtime, CPU is enough for one
query at a time). The results are searched against the listings' cover vectors, which the
embedder writes with the same model.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from encoders.errors import EncoderError, ImageError
from encoders.preprocess import preprocess_image
from encoders.runtime import Encoder
from schemas import RecallQuery, limits

from .errors import EmbeddingFailed, InvalidQuery

log = logging.getLogger(__name__)

#: A photo query may decode to at most this many pixels (a phone photo has ~12 M).
QUERY_MAX_PIXELS = 16_000_000
#: After a failed model load, queries are answered with that failure for this long before
#: the next attempt: loading verifies checksums and opens five sessions, too costly per query.
RETRY_LOAD_AFTER_S = 60.0


class QueryEmbedder:
    """Loads the model on first use; thread-safe; raises :class:`InvalidQuery` for bad input
    (``empty_text``, ``not_an_image``, ``too_large``) and :class:`EmbeddingFailed` when the model
    cannot serve such queries (``model_unavailable``, ``no_shared_space``, ``encode_failed``)."""

    def __init__(
        self,
        model_dir: Path,
        threads: int = 1,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._model_dir = model_dir
        self._threads = threads
        self._monotonic = monotonic
        self._encoder: Encoder | None = None
        self._failure: tuple[float, EmbeddingFailed] | None = None
        self._lock = threading.Lock()

    def encoder(self) -> Encoder:
        """The model, loaded once; a failed load is answered from memory for a while."""
        with self._lock:
            if self._encoder is not None:
                return self._encoder
            if self._failure is not None:
                failed_at, failure = self._failure
                if self._monotonic() - failed_at < RETRY_LOAD_AFTER_S:
                    raise failure
            try:
                self._encoder = self._load()
            except EmbeddingFailed as exc:
                log.warning("text and photo queries unavailable: %s", exc)
                self._failure = (self._monotonic(), exc)
                raise
            self._failure = None
            return self._encoder

    def _load(self) -> Encoder:
        try:
            encoder = Encoder.load(self._model_dir, intra_op_threads=self._threads)
        except EncoderError as exc:
            raise EmbeddingFailed(
                f"cannot load the model at {self._model_dir}: {exc}", reason="model_unavailable"
            ) from exc
        if not encoder.has_shared_space:
            raise EmbeddingFailed(
                f"model {encoder.manifest.model_version} has no shared image-title space; text "
                "and photo queries need a model trained with it",
                reason="no_shared_space",
            )
        return encoder

    @property
    def model_version(self) -> str:
        """The version of the model the queries are embedded with."""
        return self.encoder().manifest.model_version

    def embed(self, query: RecallQuery) -> tuple[float, ...]:
        """The shared-space vector of a text or image query."""
        try:
            if query.text is not None:
                return self._embed_text(query.text)
            if query.image is not None:
                return self._embed_image(query.image)
        except (InvalidQuery, EmbeddingFailed):
            raise
        except Exception as exc:  # ONNX Runtime raises its own untyped errors
            raise EmbeddingFailed(f"the model failed: {exc}", reason="encode_failed") from exc
        raise ValueError(f"not a text or image query: {query.kind}")

    def _embed_text(self, text: str) -> tuple[float, ...]:
        phrase = " ".join(text.split())
        if not phrase:
            raise InvalidQuery("the text query is blank", reason="empty_text")
        vector = self.encoder().text_embedding([phrase])[0]
        return _finite(vector)

    def _embed_image(self, encoded: str) -> tuple[float, ...]:
        if len(encoded) > 4 * ((limits.MAX_QUERY_IMAGE_BYTES + 2) // 3):
            raise InvalidQuery(_too_large(), reason="too_large")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidQuery(f"image is not valid base64: {exc}", reason="not_an_image") from exc
        if len(data) > limits.MAX_QUERY_IMAGE_BYTES:
            raise InvalidQuery(_too_large(), reason="too_large")
        encoder = self.encoder()
        try:
            pixels = preprocess_image(data, encoder.image_spec, max_pixels=QUERY_MAX_PIXELS)
        except ImageError as exc:
            reason = "too_large" if exc.reason in ("too_large", "decompression_bomb") else None
            raise InvalidQuery(
                f"the photo cannot be used: {exc}", reason=reason or "not_an_image"
            ) from exc
        vector = encoder.image_embedding(pixels[np.newaxis])[0]
        return _finite(vector)


def _too_large() -> str:
    return f"the photo is over {limits.MAX_QUERY_IMAGE_BYTES} bytes"


def _finite(vector: np.ndarray) -> tuple[float, ...]:
    if not np.all(np.isfinite(vector)):
        raise EmbeddingFailed("the model produced a non-finite vector", reason="encode_failed")
    return tuple(float(x) for x in vector)

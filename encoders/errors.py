"""Errors of the encoders: bad images, bad model directories, bad training data.

Every error carries a stable ``reason`` so the embedder can put it in a dead-letter header or a
metric label without parsing messages.
"""

from __future__ import annotations

from vitrine.errors import VitrineError


class EncoderError(VitrineError):
    """Root of every error raised by :mod:`encoders`."""

    reason = "encoder_error"


class ImageError(EncoderError):
    """One cover image could not be turned into a tensor.

    Reasons: ``empty``, ``unsupported_format``, ``undecodable``, ``too_large``,
    ``decompression_bomb``, ``bad_dimensions``.
    """

    reason = "undecodable"


class ModelError(EncoderError):
    """A model directory, checkpoint or weights file cannot be used.

    Reasons: ``model_not_found``, ``manifest_invalid``, ``model_file_missing``,
    ``checksum_mismatch``, ``weights_invalid``, ``session_failed``, ``bad_input``.
    """

    reason = "model_invalid"


class DataError(EncoderError):
    """A training data directory does not follow the documented on-disk format."""

    reason = "data_invalid"

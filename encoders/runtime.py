"""Serving: load a model directory and turn batches of images and titles into embeddings.

Imports onnxruntime, numpy and tokenizers only; never torch. An :class:`Encoder` is safe to
share between threads (ONNX Runtime sessions allow concurrent ``run`` calls).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from encoders.errors import ModelError
from encoders.manifest import Manifest
from encoders.preprocess import ImageSpec
from encoders.tokenize import TitleTokenizer

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
# Preferred order when the caller names none: the fastest provider this build offers.
DEFAULT_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU)
_logged_choices: set[tuple[str, ...]] = set()


@dataclass(frozen=True)
class EncodeResult:
    """Output of :meth:`Encoder.encode` for a batch of N listings."""

    embeddings: np.ndarray  # float32 [N, D], L2-normalised
    mismatch: np.ndarray  # float32 [N], P(no click) in [0, 1]
    #: float32 [N, shared_dim]: the covers in the shared image-title space (query by photo and
    #: by text); None for a model without that space.
    image_vectors: np.ndarray | None = None


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The requested providers this build offers, in order, always ending with CPU."""
    wanted = list(requested) if requested else list(DEFAULT_PREFERENCE)
    unknown = [p for p in wanted if p not in available]
    if requested and unknown:
        log.warning("execution providers not available in this onnxruntime: %s", unknown)
    chosen = [p for p in wanted if p in available and p != CPU]
    return [*chosen, CPU]


def _session_options(intra_op_threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads is not None:
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
    # Idle intra-op threads sleep instead of spinning: on a machine where image decoding and
    # the service's own threads share the cores, spinning threads took CPU the other work
    # needed and slowed the towers too (2 cores, 2 threads, the bench's services running: 98
    # -> 122 listings/s in a micro-benchmark; the rollout bench's towers-only 100 -> 103).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only; provider fallbacks are logged by us
    return options


def _open_session(
    path: Path, providers: list[str], intra_op_threads: int | None
) -> ort.InferenceSession:
    """A session on ``providers``; when an accelerator fails to initialise, CPU alone."""
    options = _session_options(intra_op_threads)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own untyped errors (missing CUDA libraries, ...)
        if providers == [CPU]:
            raise ModelError(f"cannot load {path.name}: {exc}", reason="session_failed") from exc
        log.warning(
            "providers %s failed for %s (%s); falling back to CPU", providers, path.name, exc
        )
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=[CPU])
    except Exception as exc:
        raise ModelError(f"cannot load {path.name}: {exc}", reason="session_failed") from exc


class BatchEncoder(Protocol):
    """What the embedder and the rollout job need of a model: an :class:`Encoder` here, or
    :class:`~encoders.process.EncoderProcess` in a child process."""

    manifest: Manifest
    image_spec: ImageSpec

    @property
    def has_shared_space(self) -> bool: ...

    def encode(self, images: np.ndarray, titles: Sequence[str]) -> EncodeResult: ...

    def close(self) -> None: ...


class Encoder:
    """Image tower, text tower, fusion and shared-space heads: one ONNX Runtime session each."""

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        sessions: dict[str, ort.InferenceSession],
        tokenizer: TitleTokenizer,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.image_spec: ImageSpec = manifest.image
        self.tokenizer = tokenizer
        self._image = sessions["image"]
        self._text = sessions["text"]
        self._fusion = sessions["fusion"]
        self._projections = {
            side: sessions[role]
            for side, role in manifest.shared_space.items()
            if side in ("image", "text") and role in sessions
        }
        self.providers: list[str] = list(self._image.get_providers())

    @classmethod
    def load(
        cls,
        model_dir: Path | str,
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
    ) -> Encoder:
        """Verify the manifest's checksums, then open one session per graph.

        ``providers`` is an order of preference; those this onnxruntime build lacks are skipped
        and CPU is always the last resort. Raises :class:`ModelError`.
        """
        directory = Path(model_dir)
        manifest = Manifest.read(directory)
        manifest.verify(directory)
        chosen = choose_providers(providers, ort.get_available_providers())
        roles = ["image", "text", "fusion"]
        roles += [manifest.shared_space[s] for s in ("image", "text") if s in manifest.shared_space]
        sessions = {
            role: _open_session(manifest.path_of(directory, role), chosen, intra_op_threads)
            for role in roles
        }
        tokenizer = TitleTokenizer.from_file(
            manifest.path_of(directory, "tokenizer"), manifest.max_title_tokens
        )
        encoder = cls(directory, manifest, sessions, tokenizer)
        key = (manifest.model_version, *encoder.providers)
        if key not in _logged_choices:
            _logged_choices.add(key)
            log.info(
                "model %s loaded from %s on %s",
                manifest.model_version,
                directory,
                ", ".join(encoder.providers),
            )
        return encoder

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        size = self.image_spec.size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ModelError(
                f"images must be [N, 3, {size}, {size}], got {list(images.shape)}",
                reason="bad_input",
            )
        return np.ascontiguousarray(images, dtype=np.float32)

    def image_features(self, images: np.ndarray) -> np.ndarray:
        """Pooled image-tower output ``float32 [N, image_feature_dim]``."""
        images = self._check_images(images)
        return self._image.run(["features"], {"pixels": images})[0]

    def text_features(self, titles: Sequence[str]) -> np.ndarray:
        """Mean-pooled text-tower output ``float32 [N, text_feature_dim]``."""
        ids, mask = self.tokenizer(titles)
        return self._text.run(["features"], {"input_ids": ids, "attention_mask": mask})[0]

    @property
    def has_shared_space(self) -> bool:
        """Whether this model exports the image and title heads into one shared space."""
        return len(self._projections) == 2

    def _project(self, side: str, features: np.ndarray) -> np.ndarray:
        if side not in self._projections:
            raise ModelError(
                f"model {self.manifest.model_version} has no {side} projection (built before the "
                "shared image/title space existed)",
                reason="bad_input",
            )
        name = f"{side}_features"
        return self._projections[side].run(["shared"], {name: features})[0]

    def project_image_features(self, features: np.ndarray) -> np.ndarray:
        """Image-tower features -> unit vectors ``[N, shared_dim]`` in the shared space."""
        return self._project("image", np.ascontiguousarray(features, dtype=np.float32))

    def project_text_features(self, features: np.ndarray) -> np.ndarray:
        """Text-tower features -> unit vectors ``[N, shared_dim]`` in the shared space."""
        return self._project("text", np.ascontiguousarray(features, dtype=np.float32))

    def image_embedding(self, images: np.ndarray) -> np.ndarray:
        """Covers -> the shared image/title space (query by photo)."""
        return self.project_image_features(self.image_features(images))

    def text_embedding(self, titles: Sequence[str]) -> np.ndarray:
        """Titles or text queries -> the shared image/title space (query by text)."""
        return self.project_text_features(self.text_features(titles))

    def fuse(self, image_features: np.ndarray, text_features: np.ndarray) -> EncodeResult:
        """Tower features -> embeddings and mismatch (lets callers pair any cover and title)."""
        embeddings, mismatch = self._fusion.run(
            ["embedding", "mismatch"],
            {
                "image_features": np.ascontiguousarray(image_features, dtype=np.float32),
                "text_features": np.ascontiguousarray(text_features, dtype=np.float32),
            },
        )
        return EncodeResult(embeddings.astype(np.float32), mismatch.astype(np.float32))

    def close(self) -> None:
        """Nothing to release: the sessions go with the object."""

    def encode(self, images: np.ndarray, titles: Sequence[str]) -> EncodeResult:
        """One batch of N listings -> embeddings ``[N, D]`` and mismatch ``[N]``."""
        images = self._check_images(images)
        if len(titles) != images.shape[0]:
            raise ModelError(
                f"{images.shape[0]} images but {len(titles)} titles", reason="bad_input"
            )
        if images.shape[0] == 0:
            return EncodeResult(
                np.zeros((0, self.manifest.embedding_dim), np.float32), np.zeros(0, np.float32)
            )
        image_features = self.image_features(images)
        fused = self.fuse(image_features, self.text_features(titles))
        if not self.has_shared_space:
            return fused
        covers = self.project_image_features(image_features).astype(np.float32)
        return EncodeResult(fused.embeddings, fused.mismatch, covers)

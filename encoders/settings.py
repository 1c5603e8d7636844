"""Settings of the encoders: where the model lives and how ONNX Runtime runs it."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from vitrine.settings import VitrineSettings


class ModelSettings(VitrineSettings):
    """``VITRINE_MODEL_DIR``, ``VITRINE_ORT_PROVIDERS``, ``VITRINE_ORT_INTRA_THREADS``, ..."""

    model_dir: Path | None = Field(
        default=None,
        description="Model directory written by `vitrine model build`. Unset: HOME/models/cpu.",
    )
    ort_providers: list[str] | None = Field(
        default=None,
        description="ONNX Runtime execution providers in order of preference, as a JSON list "
        '(["CUDAExecutionProvider", "CPUExecutionProvider"]). Unset: TensorRT, CUDA, then CPU, '
        "whichever this onnxruntime build offers.",
    )
    ort_intra_threads: int | None = Field(
        default=None, ge=1, le=256, description="Intra-op threads per session. Unset: ORT default."
    )
    image_max_pixels: int = Field(
        default=40_000_000, ge=10_000, description="Images with more pixels are rejected."
    )
    image_max_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Images with more bytes are rejected."
    )

    @field_validator("ort_providers")
    @classmethod
    def _providers(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(p.endswith("ExecutionProvider") for p in value):
            raise ValueError("provider names end in ExecutionProvider, e.g. CPUExecutionProvider")
        return value or None

    @model_validator(mode="after")
    def _default_model_dir(self) -> ModelSettings:
        if self.model_dir is None:
            object.__setattr__(self, "model_dir", self.home / "models" / "cpu")
        return self

    @property
    def resolved_model_dir(self) -> Path:
        """The model directory, never None after validation."""
        assert self.model_dir is not None
        return self.model_dir

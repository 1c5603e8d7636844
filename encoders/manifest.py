"""The model directory's ``manifest.json``: what a model is, and proof its files are intact.

Written by ``vitrine model build``, read by :class:`encoders.runtime.Encoder`. The format is
documented in ``docs/model.md``; ``format_version`` changes when a reader would misread it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from encoders.errors import ModelError
from encoders.preprocess import ImageSpec

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
FILE_ROLES = ("image", "text", "fusion", "tokenizer")  # required
PROJECTION_ROLES = ("image_projection", "text_projection")  # optional: shared image/title space


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFile:
    """One file of the model directory, by role."""

    path: str  # relative, POSIX separators
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """Everything serving needs to know about a model directory."""

    model_version: str
    profile: str
    embedding_dim: int
    image_feature_dim: int
    text_feature_dim: int
    image: ImageSpec
    max_title_tokens: int
    opset: int
    files: dict[str, ModelFile]
    created_at: str
    architecture: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    # {"dim", "image": role, "text": role}: the heads into the shared image/title space; empty
    # for models built before it existed.
    shared_space: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["image"] = self.image.to_dict()
        return data

    def write(self, directory: Path) -> Path:
        """Write ``manifest.json`` into ``directory``."""
        path = Path(directory) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Validate and build; any problem is a :class:`ModelError` ``manifest_invalid``."""
        try:
            if data.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {data.get('format_version')!r} is not supported")
            files = {role: ModelFile(**entry) for role, entry in data["files"].items()}
            missing = [role for role in FILE_ROLES if role not in files]
            if missing:
                raise ValueError(f"files lacks roles {missing}")
            for entry in files.values():
                pure = PurePosixPath(entry.path)
                if pure.is_absolute() or ".." in pure.parts or len(entry.sha256) != 64:
                    raise ValueError(f"bad file entry {entry}")
            manifest = cls(
                model_version=str(data["model_version"]),
                profile=str(data["profile"]),
                embedding_dim=int(data["embedding_dim"]),
                image_feature_dim=int(data["image_feature_dim"]),
                text_feature_dim=int(data["text_feature_dim"]),
                image=ImageSpec.from_dict(data["image"]),
                max_title_tokens=int(data["max_title_tokens"]),
                opset=int(data["opset"]),
                files=files,
                created_at=str(data["created_at"]),
                architecture=dict(data.get("architecture", {})),
                training=dict(data.get("training", {})),
                shared_space=dict(data.get("shared_space") or {}),
            )
            for side in ("image", "text"):
                role = manifest.shared_space.get(side)
                if manifest.shared_space and role not in files:
                    raise ValueError(f"shared_space.{side} names no file role ({role!r})")
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"invalid manifest: {exc!r}", reason="manifest_invalid") from exc
        if manifest.embedding_dim < 1 or not manifest.model_version:
            raise ModelError(
                "invalid manifest: empty version or dimension", reason="manifest_invalid"
            )
        return manifest

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Read ``manifest.json`` from a model directory (checksums are not verified here)."""
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ModelError(f"no {MANIFEST_NAME} in {directory}", reason="model_not_found")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot parse {path}: {exc}", reason="manifest_invalid") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{path} is not a JSON object", reason="manifest_invalid")
        return cls.from_dict(data)

    def path_of(self, directory: Path, role: str) -> Path:
        """Absolute path of the file playing ``role``."""
        return Path(directory) / self.files[role].path

    def verify(self, directory: Path) -> None:
        """Check every listed file exists with the recorded size and sha256."""
        for role, entry in sorted(self.files.items()):
            path = self.path_of(directory, role)
            if not path.is_file():
                raise ModelError(
                    f"{role} file {entry.path} is missing", reason="model_file_missing"
                )
            actual = sha256_file(path)
            if actual != entry.sha256 or path.stat().st_size != entry.bytes:
                raise ModelError(
                    f"{role} file {entry.path}: sha256 {actual[:12]}... does not match the "
                    f"manifest's {entry.sha256[:12]}...",
                    reason="checksum_mismatch",
                )


def describe_file(directory: Path, relative: str) -> ModelFile:
    """A :class:`ModelFile` for ``directory/relative`` with its size and sha256."""
    path = Path(directory) / relative
    return ModelFile(path=relative, sha256=sha256_file(path), bytes=path.stat().st_size)


def version_from_files(profile: str, files: dict[str, ModelFile]) -> str:
    """A model version that changes whenever any file changes: ``<profile>-<12 hex>``."""
    digest = hashlib.sha256()
    for role in sorted(files):
        digest.update(f"{role}:{files[role].sha256}\n".encode())
    return f"{profile}-{digest.hexdigest()[:12]}"

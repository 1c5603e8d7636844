"""Frozen-tower features, computed once per data directory and cached on disk (torch only).

With the towers frozen, every epoch would recompute the same image and text features; instead
they are computed once (decode, resize and crop exactly as serving does) and stored as ``.npy``
files named by a digest of everything they depend on: the listings' ids, titles and cover files
(path, size, mtime), the preprocessing, and the towers' weights. A changed input gives a new
name, so a stale cache is never read. When the last image stage is fine-tuned, the cache holds
the output of the frozen body instead of the pooled features (float16 to halve its size).

Image features are computed by ONNX Runtime on a trace of the trunk, as serving computes them:
on a 2-core CPU it runs EfficientNet-Lite's depthwise convolutions ~5x faster than eager torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from encoders.dataset import MarketplaceData, read_cover
from encoders.preprocess import ImageSpec
from encoders.tokenize import TitleTokenizer
from encoders.towers import Towers, normalise

log = logging.getLogger(__name__)
IMAGE_CHUNK = 64


def module_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\n".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _files_digest(data: MarketplaceData) -> str:
    digest = hashlib.sha256()
    for listing in data.listings:
        path = data.root / listing.image
        try:
            stat = path.stat()
            stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            stamp = "missing"  # read_cover raises the real error later
        digest.update(f"{listing.listing_id}\t{listing.image}\t{stamp}\n".encode())
    return digest.hexdigest()


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _cached(path: Path | None) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable feature cache %s: %s", path, exc)
        return None


def _store(path: Path | None, array: np.ndarray) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        np.save(fh, array, allow_pickle=False)
    tmp.replace(path)


def _chunks(data: MarketplaceData, spec: ImageSpec, threads: int) -> Iterator[np.ndarray]:
    """Decoded covers in chunks, the next chunk decoding while the current one is encoded."""
    listings = data.listings
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(listings), IMAGE_CHUNK):
            part = listings[start : start + IMAGE_CHUNK]
            yield np.stack(list(pool.map(lambda x: read_cover(data, x, spec), part)))


class _TrunkPart(torch.nn.Module):
    def __init__(self, trunk: torch.nn.Module, body_only: bool) -> None:
        super().__init__()
        self.trunk, self.body_only = trunk, body_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.body(x) if self.body_only else self.trunk(x)  # type: ignore[operator]


def _onnx_runner(
    trunk: torch.nn.Module, body_only: bool, size: int
) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trunk.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter; parity is checked at export
            torch.onnx.export(
                _TrunkPart(trunk, body_only).eval(),
                (torch.zeros(2, 3, size, size),),
                str(path),
                dynamo=False,
                input_names=["pixels"],
                output_names=["features"],
                dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}},
                opset_version=17,
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    return lambda x: session.run(["features"], {"pixels": x})[0]


@torch.no_grad()
def image_features(
    towers: Towers,
    data: MarketplaceData,
    *,
    body_only: bool = False,
    cache_dir: Path | None = None,
    progress: bool = True,
    threads: int = 2,
) -> np.ndarray:
    """Pooled trunk features ``float32 [N, Fi]`` (or frozen-body maps, float16) per listing."""
    spec = towers.profile.image_spec()
    name = "body" if body_only else "pooled"
    key = _key(name, spec.to_dict(), module_digest(towers.trunk), _files_digest(data))
    path = cache_dir / f"image-{name}-{key}.npy" if cache_dir else None
    hit = _cached(path)
    if hit is not None and len(hit) == len(data.listings):
        log.info("image features from cache %s", path)
        return hit
    run = _onnx_runner(towers.trunk.eval(), body_only, spec.size)
    out: list[np.ndarray] = []
    bar = tqdm(total=len(data.listings), desc="image features", disable=not progress)
    for pixels in _chunks(data, spec, threads):
        y = run(normalise(pixels, spec).numpy())
        out.append(y.astype(np.float16) if body_only else y)
        bar.update(len(pixels))
    bar.close()
    result = np.concatenate(out)
    _store(path, result)
    return result


@torch.no_grad()
def text_features(
    towers: Towers,
    titles: list[str],
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
    batch: int = 128,
) -> np.ndarray:
    """Frozen text-tower features ``float32 [N, Ft]`` for every title."""
    max_tokens = towers.profile.max_title_tokens
    key = _key("text", max_tokens, module_digest(towers.text), titles)
    path = cache_dir / f"text-{key}.npy" if cache_dir else None
    hit = _cached(path)
    if hit is not None and len(hit) == len(titles):
        log.info("text features from cache %s", path)
        return hit
    tokenizer = TitleTokenizer.from_file(towers.tokenizer_file, max_tokens)
    towers.text.eval()
    out = []
    for start in tqdm(range(0, len(titles), batch), desc="title features", disable=not progress):
        ids, mask = tokenizer(titles[start : start + batch])
        out.append(towers.text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())
    result = np.concatenate(out) if out else np.zeros((0, towers.text.feature_dim), np.float32)
    _store(path, result)
    return result

"""Reading a training data directory (the documented on-disk format) into arrays.

``listings.jsonl`` (one listing per line: ``listing_id``, ``title``, ``image`` relative path,
``clicked``; optional ``split``, ``category`` and ``product``) and ``coclicks.csv``
(``listing_a,listing_b``).
Images go through the serving preprocessing (:func:`encoders.preprocess.decode_image`), so the
model trains on exactly the pixels it will see in production.
"""

from __future__ import annotations

import csv
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from encoders.errors import DataError, ImageError
from encoders.negatives import ListingMeta
from encoders.preprocess import ImageSpec, decode_image


@dataclass(frozen=True)
class Listing:
    """One training listing."""

    listing_id: str
    title: str
    image: str
    clicked: bool
    split: str
    category: str | None = None
    product: str | None = None  # listings sharing it are variants (colours) of one product


@dataclass
class MarketplaceData:
    """Listings, co-click pairs (as index pairs) and the train/test split."""

    root: Path
    listings: list[Listing]
    pairs: np.ndarray  # int64 [P, 2], both ends in the same split

    def indices(self, split: str) -> np.ndarray:
        """Indices of the listings in ``split``."""
        return np.asarray([i for i, x in enumerate(self.listings) if x.split == split], np.int64)

    def meta(self) -> ListingMeta:
        """Category, product, group and title codes for negative sampling."""
        return ListingMeta.build(
            [x.title for x in self.listings],
            [x.category for x in self.listings],
            [x.product for x in self.listings],
            self.pairs,
        )

    def with_validation(self, share: float, seed: int) -> MarketplaceData:
        """A copy with ``share`` of the train split's groups (product, else co-click component)
        moved to a ``validation`` split, for choosing hyper-parameters without the test split.

        Whole groups move, so no product has variants on both sides; co-click pairs that would
        cross the two are dropped, as between train and test.
        """
        if not 0.0 < share < 1.0:
            raise DataError("the validation share must be between 0 and 1", reason="bad_input")
        train = self.indices("train")
        group = self.meta().group
        groups = np.unique(group[train])
        chosen = np.random.default_rng(seed).permutation(groups)[: round(share * len(groups))]
        moved = set(train[np.isin(group[train], chosen)].tolist())
        listings = [
            replace(x, split="validation") if i in moved else x for i, x in enumerate(self.listings)
        ]
        keep = [listings[a].split == listings[b].split for a, b in self.pairs]
        return MarketplaceData(self.root, listings, self.pairs[np.asarray(keep, bool)])

    def pairs_in(self, split: str) -> np.ndarray:
        """Co-click pairs whose listings are both in ``split``."""
        if len(self.pairs) == 0:
            return self.pairs
        keep = [self.listings[a].split == split for a, _ in self.pairs]
        return self.pairs[np.asarray(keep, bool)]


def _hash_split(listing_id: str, test_share: float) -> str:
    bucket = int(hashlib.sha256(listing_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_share else "train"


def load_data(root: Path, test_share: float = 0.2) -> MarketplaceData:
    """Read and validate a data directory; a listing without ``split`` is split by id hash."""
    root = Path(root)
    listings_file, pairs_file = root / "listings.jsonl", root / "coclicks.csv"
    for path in (listings_file, pairs_file):
        if not path.is_file():
            raise DataError(f"{path.name} not found in {root}", reason="data_missing")
    listings: list[Listing] = []
    index: dict[str, int] = {}
    with listings_file.open() as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                listing = Listing(
                    listing_id=str(raw["listing_id"]),
                    title=str(raw["title"]),
                    image=str(raw["image"]),
                    clicked=bool(raw["clicked"]),
                    split=str(raw.get("split") or _hash_split(str(raw["listing_id"]), test_share)),
                    category=None if raw.get("category") is None else str(raw["category"]),
                    product=None if raw.get("product") is None else str(raw["product"]),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{listings_file.name}:{line_no}: {exc!r}") from exc
            if listing.split not in ("train", "test"):
                raise DataError(f"{listings_file.name}:{line_no}: split must be train or test")
            if listing.listing_id in index:
                raise DataError(f"{listings_file.name}:{line_no}: duplicate {listing.listing_id}")
            index[listing.listing_id] = len(listings)
            listings.append(listing)
    pairs = []
    with pairs_file.open(newline="") as fh:
        for row_no, row in enumerate(csv.DictReader(fh), 2):
            try:
                a, b = index[row["listing_a"]], index[row["listing_b"]]
            except KeyError as exc:
                raise DataError(f"{pairs_file.name}:{row_no}: unknown listing {exc}") from exc
            # Pairs that cross the split would leak test listings into training: dropped.
            if a != b and listings[a].split == listings[b].split:
                pairs.append((a, b))
    if not listings:
        raise DataError(f"{listings_file} has no listings")
    return MarketplaceData(root, listings, np.asarray(pairs, np.int64).reshape(-1, 2))


def read_cover(data: MarketplaceData, listing: Listing, spec: ImageSpec) -> np.ndarray:
    """One listing's cover as ``uint8 [H, W, 3]`` after the serving resize and crop."""
    path = data.root / listing.image
    try:
        return np.asarray(decode_image(path.read_bytes(), spec), dtype=np.uint8)
    except (OSError, ImageError) as exc:
        raise DataError(f"{listing.listing_id}: image {listing.image}: {exc}") from exc


def load_images(
    data: MarketplaceData, spec: ImageSpec, threads: int = 2, progress: bool = True
) -> np.ndarray:
    """Every listing's cover as ``uint8 [N, H, W, 3]`` after the serving resize and crop."""

    def one(listing: Listing) -> np.ndarray:
        return read_cover(data, listing, spec)

    out = np.empty((len(data.listings), spec.size, spec.size, 3), np.uint8)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = pool.map(one, data.listings)
        for i, pixels in enumerate(
            tqdm(results, total=len(out), desc="decoding images", disable=not progress)
        ):
            out[i] = pixels
    return out

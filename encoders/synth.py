"""A synthetic marketplace in the training on-disk format, deterministic by seed.

Four product groups with three categories each: the real item, a toy of it and a print of it
("car", "toy car", "car poster"). Titles are drawn from the group's vocabulary only, so a title
cannot tell the three categories of a group apart; the rendered cover image can (each category
has its own shape). Each listing also has a colour, named in the title and painted in the
image. Co-clicks join listings of the same category and colour within the same split. A share
of listings get the image of a category from another group with a random colour (a swapped
cover) and are labelled no-click. See ``docs/model.md`` for the format.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

GROUPS: dict[str, dict[str, list[str]]] = {
    "vehicles": {
        "nouns": ["car", "coupe", "roadster", "convertible", "racer"],
        "adjectives": ["sport", "classic", "turbo", "vintage", "racing", "gt"],
        "brands": ["Porsche", "Ferrari", "Ford", "BMW", "Audi"],
    },
    "footwear": {
        "nouns": ["sneaker", "trainer", "runner", "boot", "shoe"],
        "adjectives": ["running", "leather", "suede", "high-top", "retro", "trail"],
        "brands": ["Nike", "Adidas", "Puma", "Asics", "Vans"],
    },
    "guitars": {
        "nouns": ["guitar", "stratocaster", "acoustic", "bass", "telecaster"],
        "adjectives": ["electric", "vintage", "sunburst", "custom", "six-string", "tremolo"],
        "brands": ["Fender", "Gibson", "Yamaha", "Ibanez", "Martin"],
    },
    "watches": {
        "nouns": ["watch", "chronograph", "diver", "timepiece", "wristwatch"],
        "adjectives": ["automatic", "quartz", "steel", "dive", "chrono", "luxury"],
        "brands": ["Rolex", "Omega", "Seiko", "Casio", "Tissot"],
    },
}
KINDS = ("item", "toy", "print")
SHAPES = (
    "circle", "square", "triangle", "diamond", "star", "ring",
    "cross", "hexagon", "stripes", "ellipse", "ell", "arrow",
)  # fmt: skip
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "blue": (40, 70, 210),
    "green": (40, 160, 60),
    "yellow": (230, 200, 30),
    "purple": (130, 50, 170),
    "orange": (240, 130, 20),
}
CONDITIONS = ["new", "used", "like new", "mint", "boxed", "rare", "tested"]
EXTRAS = ["edition", "collection", "model", "series", "original", "2019", "2021", "limited"]


@dataclass(frozen=True)
class SynthConfig:
    """Size and shape of the generated marketplace."""

    listings: int = 6000
    seed: int = 7
    image_size: int = 128
    swap_share: float = 0.15
    test_share: float = 0.1
    coclicks_per_listing: int = 3


def categories() -> list[tuple[str, str, str]]:
    """``(category, group, shape)`` for the 12 categories."""
    out = []
    for g, group in enumerate(GROUPS):
        for k, kind in enumerate(KINDS):
            name = group if kind == "item" else f"{group}-{kind}"
            out.append((name, group, SHAPES[g * len(KINDS) + k]))
    return out


def make_title(rng: np.random.Generator, group: str, colour: str) -> str:
    """A title from ``group``'s vocabulary naming ``colour`` (never the category)."""
    vocab = GROUPS[group]

    def pick(words: list[str]) -> str:
        return words[int(rng.integers(len(words)))]

    brand, adj, noun = pick(vocab["brands"]), pick(vocab["adjectives"]), pick(vocab["nouns"])
    cond, extra = pick(CONDITIONS), pick(EXTRAS)
    templates = (
        f"{brand} {adj} {colour} {noun} {extra}",
        f"{cond} {colour} {brand} {noun} - {adj}",
        f"{adj} {noun} in {colour}, {cond}",
        f"{brand} {noun} {colour} {adj} {extra} ({cond})",
    )
    return templates[int(rng.integers(len(templates)))]


def _polygon(shape: str) -> list[tuple[float, float]]:
    def regular(n: int, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
        return [
            (math.cos(phase + 2 * math.pi * i / n), math.sin(phase + 2 * math.pi * i / n))
            for i in range(n)
        ]

    if shape == "square":
        return [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    if shape == "triangle":
        return regular(3)
    if shape == "diamond":
        return [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]
    if shape == "hexagon":
        return regular(6, 0.0)
    if shape == "star":
        outer, inner = regular(5), [(0.4 * x, 0.4 * y) for x, y in regular(5, math.pi / 2)]
        return [p for pair in zip(outer, [(-x, -y) for x, y in inner], strict=True) for p in pair]
    if shape == "cross":
        a, b = 0.3, 1.0
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a),
                (-b, a), (-b, -a), (-a, -a)]  # fmt: skip
    if shape == "ell":
        return [(-0.8, -1), (-0.2, -1), (-0.2, 0.4), (0.8, 0.4), (0.8, 1), (-0.8, 1)]
    if shape == "arrow":
        return [(-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)]
    raise ValueError(shape)


def render(rng: np.random.Generator, shape: str, colour: str, size: int) -> Image.Image:
    """One product photo: a jittered coloured shape on a light, slightly noisy background."""
    bg = tuple(int(v) for v in rng.integers(190, 256, size=3))
    image = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(image)
    fill = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in COLOURS[colour])
    cx, cy = size * (0.5 + rng.uniform(-0.12, 0.12, size=2))
    radius = size * rng.uniform(0.24, 0.36)
    angle = rng.uniform(-0.35, 0.35)
    cos, sin = math.cos(angle), math.sin(angle)

    def place(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [
            (cx + radius * (x * cos - y * sin), cy + radius * (x * sin + y * cos))
            for x, y in points
        ]

    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, int(radius * 0.35)))
    elif shape == "ellipse":
        pts = [(math.cos(t), 0.45 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 40)]
        draw.polygon(place(pts), fill=fill)
    elif shape == "stripes":
        for offset in (-0.7, 0.0, 0.7):
            bar = [(-1, offset - 0.18), (1, offset - 0.18), (1, offset + 0.18), (-1, offset + 0.18)]
            draw.polygon(place(bar), fill=fill)
    else:
        draw.polygon(place(_polygon(shape)), fill=fill)
    # A distractor line in a random colour, so the image is not just a shape on a plain field.
    line = tuple(int(v) for v in rng.integers(0, 256, size=4))
    draw.line(line, fill=tuple(int(v) for v in rng.integers(60, 200, size=3)), width=2)
    noise = rng.normal(0, 6, size=(size, size, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).filter(ImageFilter.SMOOTH)


def generate(out: Path, config: SynthConfig, progress: bool = True) -> dict[str, int]:
    """Write ``listings.jsonl``, ``coclicks.csv``, ``images/`` and ``synth.json`` under ``out``."""
    rng = np.random.default_rng(config.seed)
    cats = categories()
    colours = list(COLOURS)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for i in tqdm(range(config.listings), desc="rendering listings", disable=not progress):
        listing_id = f"L{i:06d}"
        cat_index, colour = int(rng.integers(len(cats))), colours[int(rng.integers(len(colours)))]
        category, group, shape = cats[cat_index]
        swapped = bool(rng.random() < config.swap_share)
        image_shape, image_colour = shape, colour
        if swapped:
            others = [c for c in cats if c[1] != group]
            image_shape = others[int(rng.integers(len(others)))][2]
            image_colour = colours[int(rng.integers(len(colours)))]
        image_rel = f"images/{listing_id}.jpg"
        render(rng, image_shape, image_colour, config.image_size).save(
            out / image_rel, format="JPEG", quality=90
        )
        rows.append(
            {
                "listing_id": listing_id,
                "title": make_title(rng, group, colour),
                "image": image_rel,
                "clicked": not swapped,
                "category": category,
                "split": "test" if rng.random() < config.test_share else "train",
                "_cluster": (category, colour),
            }
        )
    pairs = set()
    clusters: dict[tuple[object, ...], list[str]] = {}
    for row in rows:
        if row["clicked"]:
            clusters.setdefault((*row["_cluster"], row["split"]), []).append(row["listing_id"])
    for members in clusters.values():
        for a in members:
            partners = [m for m in members if m != a]
            k = min(config.coclicks_per_listing, len(partners))
            for b in rng.choice(partners, size=k, replace=False) if k else []:
                pairs.add((min(a, str(b)), max(a, str(b))))
    with (out / "listings.jsonl").open("w") as fh:
        for row in rows:
            row.pop("_cluster")
            fh.write(json.dumps(row) + "\n")
    with (out / "coclicks.csv").open("w") as fh:
        fh.write("listing_a,listing_b\n")
        fh.writelines(f"{a},{b}\n" for a, b in sorted(pairs))
    summary = {
        "listings": len(rows),
        "swapped": sum(not r["clicked"] for r in rows),
        "coclick_pairs": len(pairs),
        "test": sum(r["split"] == "test" for r in rows),
    }
    meta = {"generator": "vitrine synth", "config": config.__dict__, "summary": summary}
    (out / "synth.json").write_text(json.dumps(meta, indent=2) + "\n")
    return summary

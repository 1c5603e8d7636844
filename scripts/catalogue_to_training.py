"""Convert a product catalogue (Parquet/CSV with titles, categories, colours, image files) into
Vitrine's training format: ``listings.jsonl``, ``coclicks.csv`` and ``images/`` (docs/model.md).

A catalogue has no click logs, so they are derived from the product structure:

* **product groups**: listings whose titles are equal once the colour word is removed, within
  one category, are variants of one product (``product`` field); groups larger than
  ``--max-group`` are generic titles ("Men Accessory Gift Set"), not products, and are skipped;
* **co-clicks**: every pair of listings of a group (shoppers who view one colour view the others);
* **held-out split**: ``--test-share`` of the *groups* (never part of a group) are ``test``,
  so the held-out products are never seen in training;
* every listing is ``clicked`` (its cover is its own); mismatch negatives of the three kinds are
  drawn from the structure by `vitrine train` and `vitrine evaluate`.

Generic: the column names are options. Colour may be its own column or one field of a
delimited column (``--colour-column description --colour-field 3 --field-sep " - "``), as may
the category. Images are copied (or hard-linked) under ``OUT/images``. Needs pandas (and
pyarrow for Parquet): the ``dev`` extra.

    python scripts/catalogue_to_training.py --catalogue products.parquet --images-root . \\
        --out fashion-train --groups 900 --singles 800 --seed 0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import sys
from itertools import combinations
from pathlib import Path

import numpy as np


def _field(values: list[str], column_sep: str | None, index: int | None) -> list[str | None]:
    if index is None or column_sep is None:
        return [v if v else None for v in values]
    out: list[str | None] = []
    for v in values:
        parts = [p.strip() for p in str(v).split(column_sep)]
        out.append(parts[index] if len(parts) > index and parts[index] else None)
    return out


def strip_colour(title: str, colour: str | None) -> str:
    """The title in lower case with the colour words removed: the product key."""
    text = title
    if colour:
        text = re.sub(r"\b" + re.escape(colour) + r"\b", " ", text, flags=re.IGNORECASE)
    return " ".join(text.lower().split())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--catalogue", type=Path, required=True, help=".parquet or .csv")
    parser.add_argument("--images-root", type=Path, required=True, help="image paths relative to")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--id-column", default="product_id")
    parser.add_argument("--title-column", default="title")
    parser.add_argument("--image-column", default="image_url")
    parser.add_argument("--category-column", default="description")
    parser.add_argument("--category-field", type=int, default=2, help="field index, or -1: whole")
    parser.add_argument("--colour-column", default="description")
    parser.add_argument("--colour-field", type=int, default=3, help="field index, or -1: whole")
    parser.add_argument("--field-sep", default=" - ", help="separator of delimited columns")
    parser.add_argument("--groups", type=int, default=900, help="multi-colour product groups")
    parser.add_argument("--singles", type=int, default=800, help="listings without a group")
    parser.add_argument("--max-group", type=int, default=8, help="larger groups are generic")
    parser.add_argument("--per-group", type=int, default=6, help="listings kept per group")
    parser.add_argument("--test-share", type=float, default=0.25, help="held-out groups")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import pandas as pd

    frame = (
        pd.read_parquet(args.catalogue)
        if args.catalogue.suffix == ".parquet"
        else pd.read_csv(args.catalogue)
    )
    sep = args.field_sep
    ids = [str(v) for v in frame[args.id_column]]
    titles = [" ".join(str(v).split()) for v in frame[args.title_column]]
    images = [str(v).replace("\\", "/") for v in frame[args.image_column]]
    category = _field(
        [str(v) for v in frame[args.category_column]],
        sep if args.category_field >= 0 else None,
        args.category_field if args.category_field >= 0 else None,
    )
    colour = _field(
        [str(v) for v in frame[args.colour_column]],
        sep if args.colour_field >= 0 else None,
        args.colour_field if args.colour_field >= 0 else None,
    )
    exists = [(args.images_root / p).is_file() for p in images]
    groups: dict[str, list[int]] = {}
    for i in range(len(ids)):
        if exists[i] and titles[i] and category[i]:
            key = f"{category[i]}|{strip_colour(titles[i], colour[i])}"
            groups.setdefault(key, []).append(i)
    rng = np.random.default_rng(args.seed)
    multi = sorted(
        k
        for k, members in groups.items()
        if 2 <= len(members) <= args.max_group and len({colour[i] for i in members}) >= 2
    )
    singles = sorted(k for k, members in groups.items() if len(members) == 1)
    chosen = [multi[i] for i in rng.permutation(len(multi))[: args.groups]]
    chosen_singles = [singles[i] for i in rng.permutation(len(singles))[: args.singles]]
    out = args.out
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, pairs = [], []
    for n, key in enumerate(chosen + chosen_singles):
        members = groups[key]
        if len(members) > args.per_group:
            members = [members[i] for i in sorted(rng.permutation(len(members))[: args.per_group])]
        split = "test" if rng.random() < args.test_share else "train"
        product = f"p{n}" if len(members) > 1 else None
        for i in members:
            suffix = Path(images[i]).suffix or ".jpg"
            target = out / "images" / f"{ids[i]}{suffix}"
            if not target.exists():
                try:
                    os.link(args.images_root / images[i], target)
                except OSError:
                    shutil.copyfile(args.images_root / images[i], target)
            rows.append(
                {
                    "listing_id": ids[i],
                    "title": titles[i],
                    "image": f"images/{target.name}",
                    "clicked": True,
                    "split": split,
                    "category": category[i],
                    "product": product,
                }
            )
        pairs += [(ids[a], ids[b]) for a, b in combinations(members, 2)]
    with (out / "listings.jsonl").open("w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    with (out / "coclicks.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["listing_a", "listing_b"])
        writer.writerows(pairs)
    summary = {
        "source": str(args.catalogue),
        "listings": len(rows),
        "groups": len(chosen),
        "singles": len(chosen_singles),
        "coclick_pairs": len(pairs),
        "test_listings": sum(r["split"] == "test" for r in rows),
        "categories": len({r["category"] for r in rows}),
        "seed": args.seed,
        "arguments": {k: str(v) for k, v in vars(args).items()},
    }
    (out / "conversion.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "arguments"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

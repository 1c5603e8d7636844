"""`vitrine train`: fit the fusion (and optionally the last image stage) on a data directory.

The recipe for real photos on a small CPU: both towers start pretrained and stay frozen, so
their features are computed once and cached (:mod:`encoders.features`); the fusion is trained
on top with five losses: triplet on co-clicks, TransH alignment, in-batch image-title InfoNCE,
the mismatch head against three kinds of swapped covers (:mod:`encoders.negatives`) plus any
no-click listings in the data, and a supervised contrastive loss on the covers' appearance
block (co-clicked covers close), whose whitening is fitted on the training features first.
``validation_share`` carves a validation split out of the training products and reports on it
instead of the test split, for choosing hyper-parameters. ``finetune_last_stage`` also trains
the image trunk's last stage from cached body outputs. A checkpoint is written after every
epoch, and the held-out report at the end.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from encoders import losses
from encoders.dataset import MarketplaceData, load_data
from encoders.errors import DataError, ModelError
from encoders.evaluate import HeldOut, evaluate_heldout, format_evaluation
from encoders.features import image_features, text_features
from encoders.negatives import ListingMeta, SwapSampler
from encoders.profiles import Profile, get_profile
from encoders.towers import Towers, build_towers

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"

__all__ = ["CHECKPOINT_NAME", "Towers", "TrainConfig", "build_towers", "load_checkpoint", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (stored in the checkpoint and the report)."""

    profile: str = "cpu"
    epochs: int = 6  # chosen on a validation split of the real-photo catalogue (docs/model.md)
    batch_size: int = 64  # co-click pairs per step; as many extra listings for the other losses
    lr: float = 2e-3
    weight_decay: float = 1e-4
    triplet_margin: float = 0.3
    align_margin: float = 0.5
    align_weight: float = 0.5
    mismatch_weight: float = 1.0
    contrastive_weight: float = 1.0
    appearance_loss_weight: float = 1.0  # the co-click appearance head (profiles with one)
    appearance_temperature: float = 0.1
    appearance_lr_scale: float = 0.1  # the head starts from the whitening; it only refines it
    #: α: weight of the appearance block against the title-aligned block in a cover's vector
    #: (photo queries rank by α² s·s' + a·a'; text queries are unaffected).
    appearance_alpha: float = 4.0
    seed: int = 0
    text_model: str | None = None  # Hugging Face-format directory; None: bundled MiniLM-L6
    image_weights: str | None = None  # state dict to start the image trunk from
    finetune_last_stage: bool = False
    tail_lr_scale: float = 0.1  # the pretrained last stage moves slower than the fresh fusion
    image_size: int | None = None  # override the profile's crop (resize keeps its 8:7 ratio)
    #: Share of listings whose cover does not show what the title says, in the catalogue the
    #: model will serve: the mismatch score is calibrated to it. None: the training data's
    #: no-click share, at least MISMATCH_PRIOR_FLOOR.
    mismatch_prior: float | None = None
    #: Share of the train split's product groups held out as a validation split; the report
    #: then evaluates them instead of the test split (for choosing hyper-parameters). 0: off.
    validation_share: float = 0.0


#: Prior of a catalogue whose training data labels no listing no-click (e.g. every listing had
#: clicks): a small share of covers is still expected to be wrong.
MISMATCH_PRIOR_FLOOR = 0.02


def prior_shift(trained_positive_share: float, prior: float) -> float:
    """Logit shift that turns a head trained on ``trained_positive_share`` positives into one
    calibrated to ``prior`` (Bayes' rule for a changed class prior; pure)."""

    def logit(p: float) -> float:
        p = min(max(p, 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))

    return logit(prior) - logit(trained_positive_share)


def run_profile(config: TrainConfig) -> Profile:
    """The profile a run trains: the named one, with ``image_size`` overridden if given."""
    profile = get_profile(config.profile)
    if config.image_size is None or config.image_size == profile.image_size:
        return profile
    if config.image_size < 32:
        raise ModelError("image_size must be at least 32", reason="bad_input")
    resize = round(config.image_size * profile.resize / profile.image_size)
    return replace(profile, image_size=config.image_size, resize=resize)


def format_report(report: dict[str, Any]) -> str:
    """The short text table printed after training and saved as ``report.txt``."""
    split = report.get("evaluation_split", "test")
    return f"on the {split} split\n" + format_evaluation(report["evaluation"])


def save_checkpoint(path: Path, towers: Towers, config: TrainConfig, extra: dict[str, Any]) -> None:
    """Atomically write everything `vitrine model build` needs to export."""
    payload = {
        "profile": towers.profile.to_dict(),
        "config": asdict(config),
        "trunk": towers.trunk.state_dict(),
        "fusion": towers.fusion.state_dict(),
        "image_weights": towers.image_weights,
        **extra,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> tuple[Towers, dict[str, Any]]:
    """Towers and metadata from a checkpoint written by :func:`train`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        profile = Profile.from_dict(payload["profile"])
        towers = build_towers(profile, payload["config"].get("text_model"), None, pretrained=False)
        towers.trunk.load_state_dict(payload["trunk"])
        towers.fusion.load_state_dict(payload["fusion"])
        towers.image_weights = dict(payload.get("image_weights") or {})
    except ModelError:
        raise
    except Exception as exc:  # torch.load and load_state_dict raise many unrelated types
        raise ModelError(f"cannot load checkpoint {path}: {exc}", reason="weights_invalid") from exc
    return towers, payload


def heldout(
    data: MarketplaceData, image: np.ndarray, text: np.ndarray, split: str = "test"
) -> HeldOut:
    """The ``split`` listings' features, labels, co-click pairs and metadata, rows aligned."""
    test = data.indices(split)
    position = {int(g): i for i, g in enumerate(test)}
    pairs = np.asarray(
        [(position[int(a)], position[int(b)]) for a, b in data.pairs_in(split)], np.int64
    ).reshape(-1, 2)
    rows = [data.listings[int(i)] for i in test]
    meta = ListingMeta.build(
        [x.title for x in rows], [x.category for x in rows], [x.product for x in rows], pairs
    )
    clicked = np.asarray([x.clicked for x in rows], bool)
    return HeldOut(image[test], text[test], clicked, pairs, meta)


def torch_scorers(towers: Towers) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``fuse`` and ``project`` callables over numpy features, for :func:`evaluate_heldout`."""
    fusion = towers.fusion.eval()

    @torch.no_grad()
    def fuse(image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        emb, logit, _, _ = fusion(torch.from_numpy(image).float(), torch.from_numpy(text))
        return emb.numpy(), torch.sigmoid(logit).numpy()

    @torch.no_grad()
    def project(image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        covers = fusion.cover_vector(torch.from_numpy(image).float())
        return covers.numpy(), fusion.text_query_vector(torch.from_numpy(text)).numpy()

    return fuse, project


def _coclick_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in pairs} | {(int(b), int(a)) for a, b in pairs}


class _Batches:
    """Index sampling for one training step (pure numpy, seeded)."""

    def __init__(self, data: MarketplaceData, meta: ListingMeta, rng: np.random.Generator) -> None:
        self.rng = rng
        self.meta = meta
        self.train = data.indices("train")
        self.pairs = data.pairs_in("train")
        if len(self.pairs) == 0:
            raise DataError("no co-click pairs in the train split")
        self.known = _coclick_set(self.pairs)
        clicked = np.asarray([x.clicked for x in data.listings], bool)
        self.clicked = clicked
        self.no_click = self.train[~clicked[self.train]]
        self.sampler = SwapSampler(meta, self.train[clicked[self.train]])
        self.kinds = meta.available_kinds() or ("any",)

    def same_mask(self, idx: np.ndarray) -> np.ndarray:
        """``[n, n]``: pairs not to treat as contrastive negatives (same title, or same group
        when the data names no products and the group is a co-click component)."""
        m = self.meta
        same = m.title[idx][:, None] == m.title[idx][None, :]
        unknown = m.product[idx] < 0
        group = (m.group[idx][:, None] == m.group[idx][None, :]) & unknown[:, None]
        return same | group

    def draw(self, b: int) -> dict[str, np.ndarray]:
        rng = self.rng
        chosen = self.pairs[rng.integers(len(self.pairs), size=b)]
        flip = rng.random(b) < 0.5  # pairs are unordered
        anchors = np.where(flip, chosen[:, 1], chosen[:, 0])
        positives = np.where(flip, chosen[:, 0], chosen[:, 1])
        extra = self.train[rng.integers(len(self.train), size=b)]
        anchors_for_swap = extra[self.clicked[extra]][: b // 2]
        draws = rng.integers(len(self.kinds), size=len(anchors_for_swap))
        kinds = [self.kinds[int(k)] for k in draws]
        if kinds and kinds[0] == "any":
            covers = self.train[rng.integers(len(self.train), size=len(anchors_for_swap))]
            covers = np.where(
                self.meta.group[covers] == self.meta.group[anchors_for_swap], -1, covers
            )
        else:
            covers = self.sampler.draw_many(anchors_for_swap, kinds, rng)
        keep = covers >= 0
        labelled = (
            self.no_click[rng.integers(len(self.no_click), size=b // 4)]
            if len(self.no_click)
            else np.zeros(0, np.int64)
        )
        return {
            "anchors": anchors,
            "positives": positives,
            "extra": extra,
            "swap_titles": anchors_for_swap[keep],
            "swap_covers": covers[keep],
            "labelled": labelled,
        }


def _calibrate_mismatch(
    towers: Towers, config: TrainConfig, batches: _Batches, positives: int, rows: int
) -> dict[str, float]:
    """Shift the mismatch head's bias from the share of swapped covers it was trained on (about
    half) to the catalogue's prior, so that the score reads as a probability there: trained
    as is, a third of genuine covers scored above 0.5."""
    natural = 1.0 - float(batches.clicked[batches.train].mean()) if len(batches.train) else 0.0
    prior = config.mismatch_prior
    if prior is None:
        prior = max(natural, MISMATCH_PRIOR_FLOOR)
    if not 0.0 < prior < 1.0:
        raise ModelError("mismatch_prior must be between 0 and 1", reason="bad_input")
    trained = positives / rows if rows else 0.5
    shift = prior_shift(trained, prior)
    last = towers.fusion.mismatch_head[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.bias.add_(shift)
    log.info("mismatch score calibrated: trained on %.2f positives, prior %.3f, logit shift %+.3f",
             trained, prior, shift)  # fmt: skip
    return {"trained_positive_share": round(trained, 4), "prior": round(prior, 4),
            "logit_shift": round(shift, 4)}  # fmt: skip


def train(
    data_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    progress: bool = True,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Train, checkpoint each epoch, evaluate on the held-out split; returns the report."""
    started = time.monotonic()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    profile = run_profile(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(data_dir)
    held_split = "test"
    if config.validation_share:
        data, held_split = data.with_validation(config.validation_share, config.seed), "validation"
    towers = build_towers(profile, config.text_model, config.image_weights)
    text_np = text_features(
        towers, [x.title for x in data.listings], cache_dir=cache_dir, progress=progress
    )
    image_np = image_features(
        towers, data, body_only=config.finetune_last_stage, cache_dir=cache_dir, progress=progress
    )
    features_seconds = time.monotonic() - started
    text = torch.from_numpy(text_np)
    image = torch.from_numpy(image_np)
    meta = data.meta()
    batches = _Batches(data, meta, rng)
    clicked = torch.from_numpy(batches.clicked)
    head = towers.fusion.appearance if towers.fusion.appearance_dim else None
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    groups = [
        {
            "params": [p for p in towers.fusion.parameters() if id(p) not in head_ids],
            "lr": config.lr,
        }
    ]
    if head is not None:
        groups.append(
            {"params": list(head.parameters()), "lr": config.lr * config.appearance_lr_scale}
        )
    tail_params: list[torch.nn.Parameter] = []
    if config.finetune_last_stage:
        tail_params = [p for m in towers.trunk.tail_modules() for p in m.parameters()]
        groups.append({"params": tail_params, "lr": config.lr * config.tail_lr_scale})
    for p in towers.trunk.parameters():
        p.requires_grad_(False)
    for p in tail_params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    b = config.batch_size
    steps_per_epoch = max(1, len(batches.train) // b)
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / total))
    )

    def pooled(idx: np.ndarray) -> torch.Tensor:
        rows = image[torch.from_numpy(idx)]
        if not config.finetune_last_stage:
            return rows
        # BatchNorm statistics stay those of ImageNet: batches of 200 would only add noise.
        towers.trunk.eval()
        return towers.trunk.tail(rows.float())

    fusion = towers.fusion
    if fusion.appearance_dim:
        with torch.no_grad():
            chunks = [batches.train[i : i + 512] for i in range(0, len(batches.train), 512)]
            fusion.set_feature_statistics(torch.cat([pooled(c).float() for c in chunks]))
            fusion.appearance_weight.fill_(config.appearance_alpha)
    group = torch.from_numpy(meta.group)

    # Steps on cached features are small matrix products: extra threads only add
    # synchronisation (measured 7x slower with 2 threads than 1 on a busy 2-core machine).
    threads = torch.get_num_threads()
    if not config.finetune_last_stage:
        torch.set_num_threads(1)
    history: list[dict[str, Any]] = []
    names = ("loss", "triplet", "align", "contrastive", "mismatch", "appearance")
    mismatch_rows = mismatch_positives = 0
    try:
        for epoch in range(config.epochs):
            towers.fusion.train()
            sums = np.zeros(len(names))
            bar = tqdm(
                range(steps_per_epoch),
                desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=not progress,
            )
            for _ in bar:
                s = batches.draw(b)
                anchors, positives, extra = s["anchors"], s["positives"], s["extra"]
                swap_t, swap_c, labelled = s["swap_titles"], s["swap_covers"], s["labelled"]
                idx = np.concatenate([anchors, positives, extra, labelled])
                features = pooled(idx)
                emb, logit, a_img, a_txt = towers.fusion(features, text[torch.from_numpy(idx)])
                same = torch.tensor(
                    [
                        [
                            positives[j] == positives[i]
                            or anchors[i] == positives[j]
                            or (int(anchors[i]), int(positives[j])) in batches.known
                            for j in range(b)
                        ]
                        for i in range(b)
                    ]
                )
                l_triplet = losses.triplet_loss(
                    emb[:b], emb[b : 2 * b], same, config.triplet_margin
                )
                matched = clicked[torch.from_numpy(idx)]
                l_align = losses.transh_alignment_loss(
                    towers.fusion, a_img[matched], a_txt[matched], config.align_margin
                )
                # Contrastive rows: each clicked listing once.
                rows, first = np.unique(idx[: 3 * b], return_index=True)
                first = first[batches.clicked[rows]]
                l_contrastive = losses.contrastive_loss(
                    a_img[first],
                    a_txt[first],
                    towers.fusion.logit_scale,
                    torch.from_numpy(batches.same_mask(idx[first])),
                )
                swap_img, swap_txt = towers.fusion.adapt(
                    pooled(swap_c), text[torch.from_numpy(swap_t)]
                )
                own = slice(2 * b, len(idx))  # extra listings (own cover) and labelled no-clicks
                mismatch_logits = torch.cat(
                    [logit[own], towers.fusion.mismatch_logit(swap_img, swap_txt)]
                )
                mismatch_labels = torch.cat(
                    [
                        ~clicked[torch.from_numpy(idx[own])],
                        torch.ones(len(swap_t), dtype=torch.bool),
                    ]
                )
                l_mismatch = losses.mismatch_loss(mismatch_logits, mismatch_labels)
                l_appearance = (
                    losses.appearance_loss(
                        fusion.appearance_vector(features[: 3 * b]),
                        group[torch.from_numpy(idx[: 3 * b])],
                        config.appearance_temperature,
                    )
                    if fusion.appearance_dim
                    else l_mismatch * 0.0
                )
                mismatch_rows += len(mismatch_labels)
                mismatch_positives += int(mismatch_labels.sum())
                loss = (
                    l_triplet
                    + config.align_weight * l_align
                    + config.contrastive_weight * l_contrastive
                    + config.mismatch_weight * l_mismatch
                    + config.appearance_loss_weight * l_appearance
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                parts = (loss, l_triplet, l_align, l_contrastive, l_mismatch, l_appearance)
                sums += [p.item() for p in parts]
                bar.set_postfix(loss=f"{loss.item():.3f}", mismatch=f"{l_mismatch.item():.3f}")
            means = dict(zip(names, (sums / steps_per_epoch).round(4).tolist(), strict=True))
            history.append({"epoch": epoch + 1, **means})
            log.info("epoch %d: %s", epoch + 1, means)
            save_checkpoint(out_dir / CHECKPOINT_NAME, towers, config, {"epoch": epoch + 1})
    finally:
        torch.set_num_threads(threads)
    calibration = _calibrate_mismatch(towers, config, batches, mismatch_positives, mismatch_rows)
    test = data.indices(held_split)
    with torch.no_grad():
        test_image = (
            np.concatenate([pooled(test[s : s + 256]).numpy() for s in range(0, len(test), 256)])
            if len(test)
            else np.zeros((0, profile.image_feature_dim), np.float32)
        )
    full_image = np.zeros((len(data.listings), test_image.shape[1]), np.float32)
    full_image[test] = test_image
    fuse, project = torch_scorers(towers)
    held = heldout(data, full_image, text_np, held_split)
    evaluation = evaluate_heldout(held, fuse, project, seed=config.seed)
    report = {
        "config": asdict(config),
        "profile": profile.to_dict(),
        "image_weights": towers.image_weights,
        "data": {
            "directory": str(data_dir),
            "listings": len(data.listings),
            "train_listings": len(batches.train),
            "train_coclick_pairs": len(batches.pairs),
            "heldout_listings": len(test),
            "negative_kinds": list(meta.available_kinds()),
        },
        "history": history,
        "mismatch_calibration": calibration,
        "evaluation": evaluation,
        "evaluation_split": held_split,
        "features_seconds": round(features_seconds, 1),
        "train_seconds": round(time.monotonic() - started, 1),
    }
    save_checkpoint(
        out_dir / CHECKPOINT_NAME, towers, config, {"epoch": config.epochs, "report": report}
    )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.txt").write_text(format_report(report) + "\n")
    return report

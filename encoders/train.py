"""`vitrine train`: fit the image tower and the fusion on a data directory (torch only).

The text tower stays frozen (its features are computed once); the image trunk and the fusion
are trained together with the triplet, TransH alignment and mismatch losses. A checkpoint is
written after every epoch, and the held-out report at the end.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from encoders import losses
from encoders.dataset import MarketplaceData, load_data, load_images
from encoders.evaluate import recall_at_k, roc_auc
from encoders.fusion import FusionModel
from encoders.preprocess import ImageSpec
from encoders.profiles import Profile, get_profile
from encoders.resnet import ResNetTrunk, load_trunk_weights
from encoders.text import TextTower, default_text_model_dir, load_text_tower
from encoders.tokenize import TitleTokenizer

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (stored in the checkpoint and the report)."""

    profile: str = "cpu"
    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    triplet_margin: float = 0.3
    align_margin: float = 0.5
    align_weight: float = 0.5
    mismatch_weight: float = 1.0
    flip: bool = True  # random horizontal flips of training images
    seed: int = 0
    text_model: str | None = None  # Hugging Face-format directory; None: bundled MiniLM-L6
    image_weights: str | None = None  # torchvision-layout ResNet state dict to start from
    freeze_image: bool = False


@dataclass
class Towers:
    """The torch modules of one model, as training leaves them and export reads them."""

    profile: Profile
    trunk: ResNetTrunk
    text: TextTower
    fusion: FusionModel
    tokenizer_file: Path


def build_towers(profile: Profile, text_model: str | None, image_weights: str | None) -> Towers:
    """Fresh towers for ``profile``: random trunk (or ``image_weights``), pretrained text."""
    text_dir = Path(text_model) if text_model else default_text_model_dir()
    text = load_text_tower(text_dir)
    trunk = ResNetTrunk(profile.resnet_depth, profile.resnet_width)
    if image_weights:
        load_trunk_weights(trunk, Path(image_weights))
    fusion = FusionModel(
        trunk.feature_dim, text.feature_dim, profile.hidden_dim, profile.embedding_dim
    )
    return Towers(profile, trunk, text, fusion, text_dir / "tokenizer.json")


def normalise(pixels: np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """``uint8 [N,H,W,3]`` -> normalised ``float32 [N,3,H,W]``, as :func:`preprocess.to_tensor`."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def text_features(
    towers: Towers, titles: list[str], progress: bool, batch: int = 128
) -> torch.Tensor:
    """Frozen text-tower features for every title."""
    tokenizer = TitleTokenizer.from_file(towers.tokenizer_file, towers.profile.max_title_tokens)
    out = []
    for start in tqdm(range(0, len(titles), batch), desc="encoding titles", disable=not progress):
        ids, mask = tokenizer(titles[start : start + batch])
        out.append(towers.text(torch.from_numpy(ids), torch.from_numpy(mask)))
    return torch.cat(out)


@torch.no_grad()
def image_features(trunk: ResNetTrunk, pixels: np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """Trunk features in eval mode, in batches."""
    trunk.eval()
    return torch.cat(
        [trunk(normalise(pixels[s : s + 128], spec)) for s in range(0, len(pixels), 128)]
    )


def evaluate(
    towers: Towers, data: MarketplaceData, pixels: np.ndarray, text: torch.Tensor
) -> dict[str, Any]:
    """Held-out recall@10 (multimodal, text-only, image-only) and mismatch ROC-AUC."""
    spec = ImageSpec(towers.profile.image_size, towers.profile.resize)
    test = data.indices("test")
    position = {int(g): i for i, g in enumerate(test)}
    pairs = np.asarray(
        [(position[int(a)], position[int(b)]) for a, b in data.pairs_in("test")], np.int64
    ).reshape(-1, 2)
    img = image_features(towers.trunk, pixels[test], spec)
    towers.fusion.eval()
    with torch.no_grad():
        emb, logit, _, _ = towers.fusion(img, text[test])
    no_click = np.asarray([not data.listings[int(i)].clicked for i in test])
    multimodal, queries = recall_at_k(emb.numpy(), pairs)
    return {
        "test_listings": len(test),
        "test_queries": queries,
        "test_coclick_pairs": len(pairs),
        "recall_at_10": {
            "multimodal": multimodal,
            "text_only": recall_at_k(text[test].numpy(), pairs)[0],
            "image_only": recall_at_k(img.numpy(), pairs)[0],
        },
        "mismatch_roc_auc": roc_auc(torch.sigmoid(logit).numpy(), no_click),
        "no_click_share": float(no_click.mean()) if len(no_click) else 0.0,
    }


def format_report(report: dict[str, Any]) -> str:
    """The short text table printed after training and saved as ``report.txt``."""
    ev = report["evaluation"]
    lines = [
        f"held-out evaluation: {ev['test_listings']} listings, {ev['test_queries']} queries, "
        f"{ev['test_coclick_pairs']} co-click pairs",
        f"{'embedding':<12} recall@10",
    ]
    lines += [
        f"{name.replace('_', '-'):<12} {value:.3f}" for name, value in ev["recall_at_10"].items()
    ]
    lines.append(
        f"mismatch ROC-AUC {ev['mismatch_roc_auc']:.3f} (no-click share {ev['no_click_share']:.2f})"
    )
    return "\n".join(lines)


def save_checkpoint(path: Path, towers: Towers, config: TrainConfig, extra: dict[str, Any]) -> None:
    """Atomically write everything `vitrine model build` needs to export."""
    payload = {
        "profile": towers.profile.to_dict(),
        "config": asdict(config),
        "trunk": towers.trunk.state_dict(),
        "fusion": towers.fusion.state_dict(),
        **extra,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> tuple[Towers, dict[str, Any]]:
    """Towers and metadata from a checkpoint written by :func:`train`."""
    from encoders.errors import ModelError

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        profile = Profile.from_dict(payload["profile"])
        towers = build_towers(profile, payload["config"].get("text_model"), None)
        towers.trunk.load_state_dict(payload["trunk"])
        towers.fusion.load_state_dict(payload["fusion"])
    except ModelError:
        raise
    except Exception as exc:  # torch.load and load_state_dict raise many unrelated types
        raise ModelError(f"cannot load checkpoint {path}: {exc}", reason="weights_invalid") from exc
    return towers, payload


def _coclick_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in pairs} | {(int(b), int(a)) for a, b in pairs}


def train(
    data_dir: Path, out_dir: Path, config: TrainConfig, progress: bool = True
) -> dict[str, Any]:
    """Train, checkpoint each epoch, evaluate on the held-out split; returns the report."""
    started = time.monotonic()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    profile = get_profile(config.profile)
    spec = ImageSpec(profile.image_size, profile.resize)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(data_dir)
    pixels = load_images(data, spec, progress=progress)
    towers = build_towers(profile, config.text_model, config.image_weights)
    text = text_features(towers, [x.title for x in data.listings], progress)
    clicked = torch.tensor([x.clicked for x in data.listings])
    train_idx, train_pairs = data.indices("train"), data.pairs_in("train")
    if len(train_pairs) == 0:
        from encoders.errors import DataError

        raise DataError("no co-click pairs in the train split")
    known = _coclick_set(train_pairs)
    no_click_idx = train_idx[~clicked.numpy()[train_idx]]
    click_idx = train_idx[clicked.numpy()[train_idx]]
    base_rate = len(no_click_idx) / max(1, len(train_idx))
    weights = torch.where(clicked, 2 * (1 - base_rate), 2 * base_rate).float()
    params = list(towers.fusion.parameters())
    if not config.freeze_image:
        params += list(towers.trunk.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(train_idx) // config.batch_size)
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / total))
    )
    b = config.batch_size
    history = []
    for epoch in range(config.epochs):
        towers.trunk.train(not config.freeze_image)
        towers.fusion.train()
        sums = np.zeros(4)
        bar = tqdm(
            range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress
        )
        for _ in bar:
            chosen = train_pairs[rng.integers(len(train_pairs), size=b)]
            anchors, positives = chosen[:, 0], chosen[:, 1]
            flip = rng.random(b) < 0.5  # pairs are unordered
            anchors, positives = (
                np.where(flip, positives, anchors),
                np.where(flip, anchors, positives),
            )
            # Mismatch rows: half no-click, half clicked, re-weighted to the true base rate so
            # the head stays calibrated while seeing many more of the rare positives.
            extra = (
                np.concatenate(
                    [
                        no_click_idx[rng.integers(len(no_click_idx), size=b // 2)],
                        click_idx[rng.integers(len(click_idx), size=b - b // 2)],
                    ]
                )
                if len(no_click_idx) and len(click_idx)
                else train_idx[rng.integers(len(train_idx), size=b)]
            )
            idx = np.concatenate([anchors, positives, extra])
            batch = normalise(pixels[idx], spec)
            if config.flip:
                flipped = torch.from_numpy(rng.random(len(idx)) < 0.5)
                batch = torch.where(flipped[:, None, None, None], batch.flip(-1), batch)
            feats = towers.trunk(batch)
            emb, logit, a_img, a_txt = towers.fusion(feats, text[idx])
            same = torch.tensor(
                [
                    [
                        positives[j] == positives[i]
                        or anchors[i] == positives[j]
                        or (int(anchors[i]), int(positives[j])) in known
                        for j in range(b)
                    ]
                    for i in range(b)
                ]
            )
            l_triplet = losses.triplet_loss(emb[:b], emb[b : 2 * b], same, config.triplet_margin)
            matched = clicked[idx]
            l_align = losses.transh_alignment_loss(
                towers.fusion, a_img[matched], a_txt[matched], config.align_margin
            )
            l_mismatch = losses.mismatch_loss(logit[2 * b :], ~clicked[extra], weights[extra])
            loss = l_triplet + config.align_weight * l_align + config.mismatch_weight * l_mismatch
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            sums += [loss.item(), l_triplet.item(), l_align.item(), l_mismatch.item()]
            bar.set_postfix(loss=f"{loss.item():.3f}", mismatch=f"{l_mismatch.item():.3f}")
        means = dict(
            zip(
                ("loss", "triplet", "align", "mismatch"),
                (sums / steps_per_epoch).round(4).tolist(),
                strict=True,
            )
        )
        history.append({"epoch": epoch + 1, **means})
        log.info("epoch %d: %s", epoch + 1, means)
        save_checkpoint(out_dir / CHECKPOINT_NAME, towers, config, {"epoch": epoch + 1})
    evaluation = evaluate(towers, data, pixels, text)
    report = {
        "config": asdict(config),
        "profile": profile.to_dict(),
        "data": {
            "listings": len(data.listings),
            "train_listings": len(train_idx),
            "train_coclick_pairs": len(train_pairs),
        },
        "history": history,
        "evaluation": evaluation,
        "train_seconds": round(time.monotonic() - started, 1),
    }
    save_checkpoint(
        out_dir / CHECKPOINT_NAME, towers, config, {"epoch": config.epochs, "report": report}
    )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.txt").write_text(format_report(report) + "\n")
    return report

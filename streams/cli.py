"""``vitrine embedder``: parse, set up, hand off."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

log = logging.getLogger(__name__)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the embedder's commands on the ``vitrine`` parser."""
    emb = sub.add_parser(
        "embedder",
        help="run the streaming embedder (listing events -> Milvus rows)",
        description="Consume listing events, fetch cover images, run the image and text towers "
        "and write embeddings to Milvus; bad events go to the dead-letter topic. Settings come "
        "from VITRINE_* variables (docs/embedder.md). SIGTERM stops it cleanly.",
    )
    emb.add_argument(
        "--max-events",
        type=int,
        default=None,
        metavar="N",
        help="burst mode: exit 0 once N events are finished and their offsets committed",
    )
    emb.add_argument(
        "--check", action="store_true", help="validate settings, load the model and exit"
    )
    emb.set_defaults(func=cmd_embedder)


def _exit_quietly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def cmd_embedder(args: argparse.Namespace) -> int:
    """Run the embedder until stopped (or burst mode is done)."""
    from streams.app import Embedder
    from streams.settings import EmbedderSettings
    from vitrine.settings import load

    settings = load(EmbedderSettings)
    # Until the embedder installs its graceful handler (once faust runs), SIGTERM just ends the
    # process: nothing was processed or committed yet, so there is nothing to finish.
    signal.signal(signal.SIGTERM, _exit_quietly)
    if args.check:
        from encoders.runtime import Encoder

        encoder = Encoder.load(settings.resolved_model_dir)
        print(f"ok: model {encoder.manifest.model_version}, {settings.bootstrap_servers}")
        return 0
    return asyncio.run(Embedder(settings).run(max_events=args.max_events))

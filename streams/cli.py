"""``vitrine embedder`` and ``vitrine produce``: parse, set up, hand off."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time

from vitrine.errors import ConfigError

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

    prod = sub.add_parser(
        "produce",
        help="demo producer: synthetic listings as events, images served on 127.0.0.1",
        description="Generate a synthetic marketplace (creates, edits, new photos, deletes), "
        "serve its cover images from a local HTTP server and produce listing events. The "
        "embedder needs VITRINE_ALLOW_LOOPBACK_IMAGES=true to fetch them.",
    )
    prod.add_argument("--listings", type=int, default=500, help="distinct listings (500)")
    prod.add_argument("--events", type=int, default=2000, help="events in all (2000)")
    prod.add_argument("--rate", type=float, default=100.0, help="events/s, 0 = unpaced (100)")
    prod.add_argument("--seed", type=int, default=7, help="random seed (7)")
    prod.add_argument("--port", type=int, default=0, help="image server port (0 = any free)")
    prod.add_argument(
        "--serve-for",
        type=float,
        default=60.0,
        metavar="S",
        help="keep serving images S seconds after the last event (60)",
    )
    prod.set_defaults(func=cmd_produce)


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


def cmd_produce(args: argparse.Namespace) -> int:
    """Produce the demo marketplace's events."""
    from confluent_kafka import Producer

    from streams.demo import LoopbackImageServer, marketplace_events, pace
    from vitrine.kafka_config import producer_config
    from vitrine.settings import VitrineSettings, load

    if args.listings < 1 or args.events < 1 or args.rate < 0 or args.serve_for < 0:
        raise ConfigError("--listings and --events must be >= 1; --rate and --serve-for >= 0")
    settings = load(VitrineSettings)
    server = LoopbackImageServer(args.port)
    producer = Producer(producer_config(settings))
    events = marketplace_events(server, args.listings, args.events, seed=args.seed)
    delivered = failed = 0

    def on_delivery(err: object, msg: object) -> None:
        nonlocal delivered, failed
        if err is None:
            delivered += 1
        else:
            failed += 1

    try:
        for key, value in pace(events, args.rate):
            while True:
                try:
                    producer.produce(
                        settings.topic_events, key=key, value=value, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        failed += producer.flush(30)  # still queued: never acknowledged
        print(
            f"produced {delivered} events to {settings.topic_events} ({failed} not delivered); "
            f"images on port {server.port}"
        )
        if failed:
            return 1
        time.sleep(max(0.0, args.serve_for))
    finally:
        server.close()
    return 0

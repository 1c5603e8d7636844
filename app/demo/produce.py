"""``vitrine produce``: the demo marketplace's events on Kafka, covers on a loopback server."""

from __future__ import annotations

import argparse
import time

from vitrine.errors import ConfigError


def add_produce_command(sub: argparse._SubParsersAction) -> None:
    """Register ``vitrine produce``."""
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


def cmd_produce(args: argparse.Namespace) -> int:
    """Produce the demo marketplace's events."""
    from confluent_kafka import Producer

    from app.demo.marketplace import LoopbackImageServer, marketplace_events, pace
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

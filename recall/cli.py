"""`vitrine recall`: run the recall worker (parse, set up, hand off)."""

from __future__ import annotations

import argparse
import logging
import signal
import time

from vitrine.settings import load

from .settings import RecallSettings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Answer "items like this one" requests from the recall requests topic (VITRINE_TOPIC_RECALL_REQUESTS,
default recall.requests) with Milvus searches over VITRINE_MILVUS_COLLECTION, replying to the
topic and partition each request names (Spring Kafka headers kafka_replyTopic,
kafka_replyPartition, kafka_correlationId). Run several replicas with the same
VITRINE_RECALL_GROUP_ID to share the load. Stops cleanly on SIGTERM / Ctrl-C.
"""

EPILOG = """\
Settings (environment): VITRINE_RECALL_GROUP_ID, VITRINE_RECALL_BATCH_MAX,
VITRINE_RECALL_MAX_SEARCH_VECTORS, VITRINE_RECALL_SEARCH_TIMEOUT_S,
VITRINE_RECALL_CONSISTENCY_LEVEL (Bounded), VITRINE_RECALL_SESSION_TIMEOUT_MS,
VITRINE_METRICS_PORT (9465; 0 = off). See docs/recall.md.
"""


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `vitrine recall`."""
    parser = sub.add_parser(
        "recall",
        help="run the recall worker (Kafka request-reply over Milvus)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        metavar="N",
        help="exit after answering N requests (tests, smoke checks)",
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="exit once the assigned partitions are drained instead of waiting for more",
    )
    parser.add_argument("--group-id", help="consumer group (same as VITRINE_RECALL_GROUP_ID)")
    parser.add_argument(
        "--metrics-port", type=int, help="port of /metrics, 0 = off (VITRINE_METRICS_PORT)"
    )
    parser.add_argument(
        "--wait-collection",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for the collection to exist at start (default 60)",
    )
    parser.set_defaults(func=cmd_recall)


def cmd_recall(args: argparse.Namespace) -> int:
    """Start the worker and run it until stopped; exit code 0 on a clean stop."""
    from . import metrics
    from .worker import RecallWorker, open_index

    overrides = {}
    if args.group_id:
        overrides["recall_group_id"] = args.group_id
    if args.metrics_port is not None:
        overrides["metrics_port"] = args.metrics_port
    settings = load(RecallSettings, **overrides)
    index = open_index(settings, wait_s=args.wait_collection)
    metrics.serve(settings.metrics_port)
    worker = RecallWorker(settings, index)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    signal.signal(signal.SIGINT, lambda *_: worker.stop())
    started = time.monotonic()
    try:
        stats = worker.run(max_requests=args.max_requests, burst=args.burst)
    finally:
        worker.close()
    log.info(
        "recall worker answered %d requests in %.1f s (%s)",
        stats.answered,
        time.monotonic() - started,
        ", ".join(f"{k}={v}" for k, v in sorted(stats.by_status.items())) or "none",
    )
    return 0

"""`vitrine infra up|down|status`: the local Kafka cluster and Milvus (lite or server)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from vitrine.infra.kafka import LocalKafka
from vitrine.infra.milvus import MilvusLite, MilvusStandalone, local_milvus
from vitrine.settings import InfraSettings, load


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `vitrine infra`."""
    infra = sub.add_parser(
        "infra",
        help="start, stop or inspect the local Kafka broker(s) and Milvus",
        description=(
            "Manage the local infrastructure. `up` fetches Apache Kafka from Maven "
            "Central into VITRINE_HOME/cache on first use (later starts need no network), "
            "formats KRaft storage, starts VITRINE_KAFKA_BROKERS brokers (1 by default, 3 for "
            "a replicated cluster) and the Milvus of VITRINE_MILVUS_KIND (lite: milvus-lite, the "
            "default; server: Milvus standalone from the `milvus` package) on 127.0.0.1 and "
            "waits until all answer. Services configured as external "
            "(VITRINE_KAFKA_BOOTSTRAP, VITRINE_MILVUS_URI) are never started or stopped."
        ),
    )
    verbs = infra.add_subparsers(dest="verb", metavar="VERB", required=True)
    up = verbs.add_parser(
        "up",
        help="start whatever is not running (idempotent)",
        description="Start the local Kafka broker(s) and Milvus unless they run or are "
        "configured as external; fetch the Kafka jars with Maven on first use; wait until all "
        "answer. Running it again changes nothing.",
    )
    up.set_defaults(func=cmd_up)
    down = verbs.add_parser(
        "down",
        help="stop the local services, leaving no process behind",
        description="Stop the brokers and the Milvus of VITRINE_HOME (SIGTERM, then SIGKILL "
        "after a grace period), found by pid file and by command line. Data is kept.",
    )
    down.set_defaults(func=cmd_down)
    status = verbs.add_parser(
        "status",
        help="show each service; exit 0 only when all answer (usable as healthcheck)",
        description="Show whether Kafka and Milvus answer, where, and which local process "
        "serves them. Exit code 0 only when both answer, so it works as a healthcheck.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    fetch = verbs.add_parser(
        "fetch",
        help="only download the Kafka jars into the cache",
        description="Resolve Apache Kafka (VITRINE_KAFKA_VERSION) and its runtime dependencies "
        "from Maven Central into VITRINE_CACHE_DIR, so later starts need no network.",
    )
    fetch.set_defaults(func=cmd_fetch)


def cmd_up(args: argparse.Namespace) -> int:
    """Start the local services that are not configured as external."""
    settings = load(InfraSettings)
    if settings.manages_kafka:
        kafka = LocalKafka(settings)
        started = kafka.start()
        print(f"kafka   {'started' if started else 'running'} on {settings.bootstrap_servers}")
    else:
        print(f"kafka   external at {settings.bootstrap_servers} (not started)")
    if settings.manages_milvus:
        started = local_milvus(settings).start()
        print(
            f"milvus  {'started' if started else 'running'} on {settings.milvus_endpoint} "
            f"({settings.milvus_kind})"
        )
    else:
        print(f"milvus  external at {settings.milvus_endpoint} (not started)")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the local services."""
    settings = load(InfraSettings)
    if settings.manages_kafka:
        print(f"kafka   {'stopped' if LocalKafka(settings).stop() else 'was not running'}")
    if settings.manages_milvus:
        # Both kinds: a home whose VITRINE_MILVUS_KIND changed must not keep the other running.
        stopped = [kind.stop() for kind in (MilvusLite(settings), MilvusStandalone(settings))]
        print(f"milvus  {'stopped' if any(stopped) else 'was not running'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print each service's state; exit 1 when one does not answer."""
    settings = load(InfraSettings)
    kafka = LocalKafka(settings).status()
    milvus = local_milvus(settings).status()
    if args.json:
        print(json.dumps({"kafka": asdict(kafka), "milvus": asdict(milvus)}))
    else:
        for st in (kafka, milvus):
            owner = f"local pid {st.pid}" if st.pid else ("local" if st.managed else "external")
            state = "answering" if st.answering else "NOT answering"
            print(f"{st.name:7} {state:14} {st.where:28} {owner}")
    return 0 if kafka.answering and milvus.answering else 1


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download the Kafka jars only."""
    settings = load(InfraSettings)
    LocalKafka(settings).fetch()
    print(f"kafka {settings.kafka_version} jars cached")
    return 0

"""A local Apache Kafka cluster (KRaft; one node by default, ``VITRINE_KAFKA_BROKERS`` nodes on
request) fetched from Maven Central with Maven.

Layout under ``VitrineSettings.home``::

    cache/m2/                     Maven's local repository (downloads happen once);
    cache/kafka-<version>/libs/   the broker's jars; present = no network needed
                                  (``cache`` is VITRINE_CACHE_DIR when set)
    kafka/server.properties       generated on every start from the settings
    kafka/data/                   KRaft metadata and logs, formatted once
    kafka/broker.pid, broker.log  the running JVM
    kafka/cluster.id              the cluster id every node is formatted with
    kafka/node-N/...              the same per node when there are several
"""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from vitrine.errors import InfraError
from vitrine.infra.service import LocalService, ServiceStatus, child_env
from vitrine.settings import VitrineSettings

log = logging.getLogger(__name__)

JVM_HEAP = ["-Xms256m", "-Xmx1g"]
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka.server.KafkaRaftServer
logger.kafka.level = info
"""


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    One id in 64 would start with ``-``, which `kafka-storage format -t` reads as an option;
    Kafka's own ``Uuid.randomUuid`` draws again in that case, and so does this.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaNode(LocalService):
    """One KRaft node (broker and controller) of the local cluster."""

    name = "broker"

    def __init__(self, cluster: LocalKafka, node_id: int) -> None:
        self.cluster = cluster
        self.node_id = node_id
        single = cluster.settings.kafka_brokers == 1
        # A single node keeps the layout of earlier releases (kafka/server.properties, data/).
        root = cluster.root if single else cluster.root / f"node-{node_id}"
        self.properties = root / "server.properties"
        super().__init__(cluster.settings, root, self.properties)
        self.data = root / "data"
        self.log_file = root / "broker.log"
        self.port, self.controller_port = cluster.settings.kafka_node_ports[node_id - 1]

    @property
    def managed(self) -> bool:
        return self.settings.manages_kafka

    @property
    def where(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    def port_hint(self) -> str:
        return (
            "set VITRINE_KAFKA_PORT / VITRINE_KAFKA_CONTROLLER_PORT, or point "
            "VITRINE_KAFKA_BOOTSTRAP at that broker if it is one"
        )

    def log_files(self) -> list[Path]:
        return [self.stdout_file, self.log_file]

    def probe(self, timeout_s: float) -> bool:
        from confluent_kafka.admin import AdminClient

        from vitrine.kafka_config import admin_config

        admin = AdminClient(admin_config(self.settings, self.where))
        metadata = admin.list_topics(timeout=timeout_s)
        # A node that answers but has not joined the cluster's metadata yet is not ready.
        return self.node_id in metadata.brokers

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        self.cluster.fetch()
        self._write_config()
        self._format()
        argv = self.cluster.java(MAIN_CLASS, str(self.properties), root=self.root, heap=JVM_HEAP)
        return argv, child_env(), self.root

    def _write_config(self) -> None:
        s = self.settings
        nodes = s.kafka_node_ports
        replication = min(3, len(nodes))
        min_isr = max(1, min(2, replication - 1))
        self.root.mkdir(parents=True, exist_ok=True)
        if len(nodes) == 1:
            quorum = [f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}"]
        else:
            voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(nodes))
            quorum = [f"controller.quorum.voters={voters}"]
        self.properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={self.node_id}",
                    *quorum,
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.data}",
                    f"num.partitions={s.topic_partitions}",
                    # Topics are created explicitly (`vitrine topics create`, the recall client's
                    # reply topic); a request header must never create a topic by accident.
                    "auto.create.topics.enable=false",
                    # Topics created without explicit settings (faust's own) get the cluster's.
                    f"default.replication.factor={replication}",
                    f"min.insync.replicas={min_isr}",
                    f"offsets.topic.replication.factor={replication}",
                    "offsets.topic.num.partitions=8",
                    f"transaction.state.log.replication.factor={replication}",
                    f"transaction.state.log.min.isr={min_isr}",
                    f"share.coordinator.state.topic.replication.factor={replication}",
                    f"share.coordinator.state.topic.min.isr={min_isr}",
                    # A restarted node catches up and takes its partitions back on its own.
                    "unclean.leader.election.enable=false",
                    "auto.leader.rebalance.enable=true",
                    # No reason to wait for more members before the first rebalance.
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        (self.root / "log4j2.properties").write_text(LOG4J2.format(log_file=self.log_file))

    def _format(self) -> None:
        if (self.data / "meta.properties").is_file():
            return
        args = ["format", "-t", self.cluster.cluster_id(), "-c", str(self.properties)]
        if self.settings.kafka_brokers == 1:
            args.append("--standalone")
        proc = subprocess.run(
            self.cluster.java(STORAGE_TOOL, *args, root=self.root),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise InfraError(f"formatting Kafka storage failed: {proc.stdout}{proc.stderr}")


class LocalKafka:
    """Fetches the jars, then formats, starts and stops the local KRaft cluster of ``settings``
    (``VITRINE_KAFKA_BROKERS`` nodes, one by default)."""

    name = "kafka"

    def __init__(self, settings: VitrineSettings) -> None:
        self.settings = settings
        self.version = settings.kafka_version
        self.cache = settings.cache
        self.libs = self.cache / f"kafka-{self.version}" / "libs"
        self.root = settings.home / "kafka"
        self._cluster_id_lock = threading.Lock()  # the nodes of a cluster format in parallel
        self.nodes = [KafkaNode(self, i + 1) for i in range(settings.kafka_brokers)]
        # The single-node layout, for callers that look at the files.
        self.properties = self.nodes[0].properties
        self.pid_file = self.nodes[0].pid_file

    # -- fetch ---------------------------------------------------------------------------------

    def fetched(self) -> bool:
        """True when the jars are in the cache (a start needs no network)."""
        return (self.libs / ".complete").is_file()

    def fetch(self) -> None:
        """Resolve the broker jars from Maven Central into the cache, once."""
        if self.fetched():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise InfraError("Maven (`mvn`) is not on PATH; it fetches the Kafka jars once")
        if shutil.which("java") is None:
            raise InfraError("Java (`java`, 17+) is not on PATH; the local broker needs it")
        work = self.libs.parent / "resolve"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        template = resources.files("vitrine.infra").joinpath("kafka-pom.xml").read_text()
        (work / "pom.xml").write_text(template.replace("@KAFKA_VERSION@", self.version))
        staging = work / "libs"
        print(f"Fetching Apache Kafka {self.version} from Maven Central (first run only)...")
        cmd = [
            mvn, "-B", "-q", "-f", str(work / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            f"-Dmaven.repo.local={self.cache / 'm2'}",
            "-DincludeScope=runtime",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not any(staging.glob(f"kafka_2.13-{self.version}.jar")):
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
            raise InfraError(
                f"Maven could not fetch org.apache.kafka:kafka_2.13:{self.version}:\n"
                + "\n".join(tail)
            )
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        (self.libs / ".complete").write_text(self.version)
        shutil.rmtree(work, ignore_errors=True)

    # -- cluster -------------------------------------------------------------------------------

    def cluster_id(self) -> str:
        """The cluster id every node is formatted with, drawn once per home (under a lock:
        the nodes of a cluster start in parallel, and two ids drawn at once leave the nodes
        refusing each other's votes with INCONSISTENT_CLUSTER_ID)."""
        path = self.root / "cluster.id"
        with self._cluster_id_lock:
            if path.is_file():
                return path.read_text().strip()
            self.root.mkdir(parents=True, exist_ok=True)
            cluster_id = new_cluster_id()
            path.write_text(cluster_id)
            return cluster_id

    def java(
        self, *args: str, root: Path | None = None, heap: list[str] | None = None
    ) -> list[str]:
        """A java command line on the cached jars, logging through ``root``'s log4j2 file."""
        log_config = (root or self.root) / "log4j2.properties"
        return [
            "java",
            *(heap or ["-Xmx256m"]),
            f"-Dlog4j2.configurationFile={log_config}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def pids(self) -> list[int]:
        """Every broker process of this home."""
        return sorted({pid for node in self.nodes for pid in node.pids()})

    def answering(self, timeout_s: float = 3.0) -> bool:
        """True when the bootstrap servers answer a metadata request."""
        from confluent_kafka.admin import AdminClient

        from vitrine.kafka_config import admin_config

        if self.settings.manages_kafka and not any(n.answering(timeout_s) for n in self.nodes):
            return False
        admin = AdminClient(admin_config(self.settings))
        try:
            admin.list_topics(timeout=timeout_s)
        except Exception:
            return False
        return True

    def start(self) -> bool:
        """Start every node that is not running; return True when this call started one.

        The nodes of a cluster start together: a controller quorum of three elects a leader
        only once two of them run, so each node's readiness is awaited after all were spawned.
        """
        if len(self.nodes) == 1:
            return self.nodes[0].start()
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            started = list(pool.map(lambda node: node.start(), self.nodes))
        return any(started)

    def wait_ready(self) -> None:
        """Block until every node answers."""
        for node in self.nodes:
            node.wait_ready()

    def stop(self) -> bool:
        """Stop every node of this home; return True when one was running."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            stopped = list(pool.map(lambda node: node.stop(), self.nodes))
        return any(stopped)

    def status(self) -> ServiceStatus:
        """Managed or external, the first pid, and whether the cluster answers."""
        pids = self.pids() if self.settings.manages_kafka else []
        return ServiceStatus(
            name=self.name,
            managed=self.settings.manages_kafka,
            where=self.settings.bootstrap_servers,
            pid=pids[0] if pids else None,
            answering=self.answering(),
        )

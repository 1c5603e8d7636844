"""A local Apache Kafka broker (KRaft, single node) fetched from Maven Central with Maven.

Layout under ``VitrineSettings.home``::

    cache/m2/                     Maven's local repository (downloads happen once);
    cache/kafka-<version>/libs/   the broker's jars; present = no network needed
                                  (``cache`` is VITRINE_CACHE_DIR when set)
    kafka/server.properties       generated on every start from the settings
    kafka/data/                   KRaft metadata and logs, formatted once
    kafka/broker.pid, broker.log  the running JVM
"""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources

from vitrine.errors import InfraError
from vitrine.infra.process import find_pids, port_open, read_pid, terminate
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


@dataclass(frozen=True)
class BrokerStatus:
    """What `vitrine infra status` reports about the broker."""

    managed: bool
    bootstrap: str
    pid: int | None
    answering: bool


class LocalKafka:
    """Fetches, formats, starts and stops the single-node broker described by ``settings``."""

    def __init__(self, settings: VitrineSettings) -> None:
        self.settings = settings
        self.version = settings.kafka_version
        self.cache = settings.cache
        self.libs = self.cache / f"kafka-{self.version}" / "libs"
        self.root = settings.home / "kafka"
        self.data = self.root / "data"
        self.properties = self.root / "server.properties"
        self.pid_file = self.root / "broker.pid"
        self.log_file = self.root / "broker.log"
        self.stdout_file = self.root / "broker.out"

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

    # -- configure -----------------------------------------------------------------------------

    def _write_config(self) -> None:
        s = self.settings
        self.root.mkdir(parents=True, exist_ok=True)
        self.properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{s.kafka_controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},"
                    f"CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.data}",
                    f"num.partitions={s.topic_partitions}",
                    # Topics are created explicitly (`vitrine topics create`, the recall client's
                    # reply topic); a request header must never create a topic by accident.
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # Single node: no reason to wait for more members before the first rebalance.
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        (self.root / "log4j2.properties").write_text(LOG4J2.format(log_file=self.log_file))

    def _java(self, *args: str, heap: list[str] | None = None) -> list[str]:
        return [
            "java",
            *(heap or ["-Xmx256m"]),
            f"-Dlog4j2.configurationFile={self.root / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def _format(self) -> None:
        if (self.data / "meta.properties").is_file():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        cmd = self._java(
            STORAGE_TOOL, "format", "-t", cluster_id, "-c", str(self.properties), "--standalone"
        )
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise InfraError(f"formatting Kafka storage failed: {proc.stdout}{proc.stderr}")

    # -- lifecycle -----------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every broker process of this home, from the pid file and the process table."""
        pid = read_pid(self.pid_file, str(self.properties))
        found = set(find_pids(str(self.properties)))
        if pid is not None:
            found.add(pid)
        return sorted(found)

    def answering(self, timeout_s: float = 3.0) -> bool:
        """True when the bootstrap servers answer a metadata request."""
        from confluent_kafka.admin import AdminClient

        host, _, port = self.settings.bootstrap_servers.split(",")[0].rpartition(":")
        if self.settings.manages_kafka and not port_open(host, int(port)):
            return False
        admin = AdminClient({"bootstrap.servers": self.settings.bootstrap_servers, "log_level": 0})
        try:
            admin.list_topics(timeout=timeout_s)
        except Exception:
            return False
        return True

    def start(self) -> bool:
        """Start the broker unless it already runs; return True when this call started it."""
        if self.pids():
            self.wait_ready()
            return False
        s = self.settings
        for port in (s.kafka_port, s.kafka_controller_port):
            if port_open("127.0.0.1", port):
                raise InfraError(
                    f"port {port} is in use by another process; set VITRINE_KAFKA_PORT / "
                    "VITRINE_KAFKA_CONTROLLER_PORT, or point VITRINE_KAFKA_BOOTSTRAP at that "
                    "broker if it is one"
                )
        self.fetch()
        self._write_config()
        self._format()
        with self.stdout_file.open("ab") as out:
            proc = subprocess.Popen(
                self._java(MAIN_CLASS, str(self.properties), heap=JVM_HEAP),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        self.wait_ready(proc)
        return True

    def wait_ready(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        """Block until the broker answers, or raise with the tail of its log."""
        deadline = time.monotonic() + self.settings_timeout()
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise InfraError(f"Kafka exited with {proc.returncode}:\n{self._log_tail()}")
            if self.answering(timeout_s=2.0):
                return
            time.sleep(0.5)
        raise InfraError(f"Kafka did not answer within the start timeout:\n{self._log_tail()}")

    def settings_timeout(self) -> float:
        """How long to wait for the broker to answer."""
        return float(getattr(self.settings, "infra_start_timeout_s", 90.0))

    def stop(self) -> bool:
        """Stop every broker process of this home; return True when one was running."""
        pids = self.pids()
        if pids:
            terminate(pids, timeout_s=30.0)
        self.pid_file.unlink(missing_ok=True)
        return bool(pids)

    def status(self) -> BrokerStatus:
        """Managed or external, pid, and whether it answers."""
        pids = self.pids() if self.settings.manages_kafka else []
        return BrokerStatus(
            managed=self.settings.manages_kafka,
            bootstrap=self.settings.bootstrap_servers,
            pid=pids[0] if pids else None,
            answering=self.answering(),
        )

    def _log_tail(self, lines: int = 20) -> str:
        text = ""
        for path in (self.stdout_file, self.log_file):
            if path.is_file():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

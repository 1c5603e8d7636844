"""What the explorer shows on a card besides the recall reply: title and cover of each listing.

The Milvus rows hold embeddings and filter fields, not titles or image URLs, so the explorer
keeps its own read-only view of the catalogue by tailing ``listings.events`` from the start of
the log. The newest version of each listing wins, as in the embedder; a deletion removes the
listing. Listings whose events have left the topic's retention show without title or photo.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from schemas import ContractError, EventType, ListingEvent, Price, decode_listing_event
from vitrine.kafka_config import consumer_config
from vitrine.settings import VitrineSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogEntry:
    """The newest known state of one listing."""

    listing_id: str
    version: int
    title: str | None
    cover_url: str | None
    category: str | None
    price: Price | None


def apply_event(
    entries: dict[str, CatalogEntry], versions: dict[str, int], event: ListingEvent
) -> bool:
    """Fold one event into the view; False when an equal or newer version was already seen."""
    if versions.get(event.listing_id, -1) >= event.version:
        return False
    versions[event.listing_id] = event.version
    if event.event_type is EventType.DELETED:
        entries.pop(event.listing_id, None)
        return True
    entries[event.listing_id] = CatalogEntry(
        listing_id=event.listing_id,
        version=event.version,
        title=event.title,
        cover_url=event.image_urls[0] if event.image_urls else None,
        category=event.category,
        price=event.price,
    )
    return True


class CatalogView:
    """A background thread that tails the events topic into a dict of :class:`CatalogEntry`."""

    def __init__(self, settings: VitrineSettings, topic: str) -> None:
        self._topic = topic
        self._consumer = Consumer(
            consumer_config(
                settings,
                group_id="vitrine-explorer",  # never commits: assign() and no offset storage
                **{"enable.auto.commit": False, "fetch.wait.max.ms": 100},
            )
        )
        self._entries: dict[str, CatalogEntry] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self.events_read = 0
        self.events_refused = 0
        self._thread = threading.Thread(target=self._run, name="explorer-catalog", daemon=True)

    def start(self) -> None:
        """Assign every partition of the topic from the beginning and start tailing."""
        metadata = self._consumer.list_topics(self._topic, timeout=10)
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise KafkaException(f"topic {self._topic} is not available")
        self._consumer.assign(
            [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in sorted(topic.partitions)]
        )
        self._thread.start()

    def get(self, listing_id: str) -> CatalogEntry | None:
        """The listing's newest state, or None when unknown or deleted."""
        with self._lock:
            return self._entries.get(listing_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        """Stop the thread and close the consumer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._consumer.consume(num_messages=500, timeout=0.2)
            except KafkaException as exc:  # the broker away for a moment: keep tailing
                log.warning("reading %s failed (%s); retrying", self._topic, exc)
                self._stop.wait(1.0)
                continue
            for message in messages:
                if message.error() is not None:
                    continue
                try:
                    event = decode_listing_event(message.value())
                except ContractError:
                    self.events_refused += 1  # the embedder dead-letters these; nothing to show
                    continue
                with self._lock:
                    apply_event(self._entries, self._versions, event)
                self.events_read += 1

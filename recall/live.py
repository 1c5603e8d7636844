"""Which collection the worker answers from: the live pointer of the control topic.

The worker starts on the collection the pointer names (``VITRINE_MILVUS_COLLECTION`` when there
is none) and follows it while running: a moved pointer opens and loads the new collection first,
then swaps the whole answerer (index, model version, query model) in one assignment. A batch
reads the answerer once, so every reply is answered from one collection, labelled with the model
that wrote it (docs/contracts.md, ``vitrine.control``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from schemas import LIVE_KEY, ContractError, LivePointer, decode_live_pointer
from vitrine.control import ControlError, ControlReader, read_control
from vitrine.settings import VitrineSettings

from . import metrics
from .index import VectorIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Live:
    """The collection answered from and what labels its replies."""

    collection: str
    model_version: str | None  # None: not named by a pointer (settings' default label)
    model_dir: Path | None
    index: VectorIndex


def collection_of(index: VectorIndex) -> str | None:
    """The collection an index searches, when it says."""
    layout = getattr(index, "layout", None)
    return getattr(layout, "name", None)


def pointer_in(records: dict[bytes, bytes | None]) -> LivePointer | None:
    """The live pointer among control records; None when absent or unreadable (logged)."""
    if LIVE_KEY not in records or records[LIVE_KEY] is None:
        return None
    try:
        return decode_live_pointer(records[LIVE_KEY])
    except ContractError as exc:
        log.error("live pointer ignored: %s", exc)
        return None


def current_pointer(settings: VitrineSettings, timeout_s: float = 10.0) -> LivePointer | None:
    """The live pointer as it is now, or None (no record, or no control topic)."""
    try:
        return pointer_in(read_control(settings, timeout_s))
    except ControlError as exc:
        log.warning("live pointer unknown (%s); using %s", exc, settings.milvus_collection)
        return None


class PointerFollower:
    """Polls the control topic (at most every ``every_s``) and opens the collection a moved
    pointer names; :meth:`changed` returns the new :class:`Live` once it is ready."""

    retry_open_s = 2.0

    def __init__(
        self,
        settings: VitrineSettings,
        open_collection: Callable[[str], VectorIndex],
        live: Live,
        every_s: float = 0.2,
    ) -> None:
        self._settings = settings
        self._open = open_collection
        self.live = live
        self._every = every_s
        self._reader: ControlReader | None = None
        self._next = 0.0
        self._wanted: LivePointer | None = None
        metrics.LIVE.labels(live.collection, live.model_version or "").set(1)

    def changed(self, *, wait: bool = False) -> Live | None:
        """The new live collection when the pointer moved and it could be opened, else None.
        ``wait``: read the control topic to its end first (at start)."""
        now = time.monotonic()
        if not wait and now < self._next:
            return None
        self._next = now + self._every
        try:
            if self._reader is None:
                self._reader = ControlReader(self._settings)
            records = self._reader.read_to_end() if wait else self._reader.poll()
        except ControlError as exc:
            log.warning("control topic not readable: %s", exc)
            return None
        pointer = pointer_in(records)
        if pointer is not None:
            self._wanted = pointer
        wanted = self._wanted
        if wanted is None or (
            wanted.collection == self.live.collection
            and wanted.model_version == self.live.model_version
        ):
            return None
        try:
            # Same collection, newly labelled (a worker started before the pointer existed):
            # nothing to open.
            same = wanted.collection == self.live.collection
            index = self.live.index if same else self._open(wanted.collection)
        except Exception as exc:  # keep answering from the current one; retried later
            metrics.POINTER_SWITCHES.labels(outcome="failed").inc()
            log.error("live pointer names %s, which cannot be opened: %s", wanted.collection, exc)
            self._next = time.monotonic() + self.retry_open_s
            return None
        old = self.live
        self.live = Live(
            wanted.collection,
            wanted.model_version,
            Path(wanted.model_dir) if wanted.model_dir else None,
            index,
        )
        metrics.LIVE.remove(old.collection, old.model_version or "")
        metrics.LIVE.labels(wanted.collection, wanted.model_version).set(1)
        metrics.POINTER_SWITCHES.labels(outcome="switched").inc()
        log.info(
            "live pointer: answering from %s (model %s) instead of %s",
            wanted.collection,
            wanted.model_version,
            old.collection,
        )
        return self.live

    def close(self) -> None:
        """Stop reading the control topic."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

"""Pure decisions of the stream hand-over: which collection and model a replica must write,
whether it must switch, and whether the rollout job has caught up (docs/operations.md, "Model
rollout"). The control-topic reading and the switch itself live in :mod:`streams.follow`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from schemas import (
    ROLLOUT_KEY,
    STREAM_KEY,
    ContractError,
    RolloutPhase,
    RolloutRecord,
    StreamRecord,
    decode_rollout_record,
    decode_stream_record,
)

log = logging.getLogger(__name__)

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Writing:
    """What a replica writes: a collection, with a model."""

    collection: str
    model_version: str


def stream_in(records: Mapping[bytes, bytes | None]) -> StreamRecord | None:
    """The stream record among control records; None when absent or unreadable (logged)."""
    value = records.get(STREAM_KEY)
    if value is None:
        return None
    try:
        return decode_stream_record(value)
    except ContractError as exc:
        log.error("stream record ignored: %s", exc)
        return None


def rollout_in(records: Mapping[bytes, bytes | None]) -> RolloutRecord | None:
    """The rollout record among control records; None when absent or unreadable (logged)."""
    value = records.get(ROLLOUT_KEY)
    if value is None:
        return None
    try:
        return decode_rollout_record(value)
    except ContractError as exc:
        log.error("rollout record ignored: %s", exc)
        return None


def switch_needed(stream: StreamRecord | None, writing: Writing) -> bool:
    """True when the stream record names another collection or model than the one written."""
    return stream is not None and (
        stream.collection != writing.collection or stream.model_version != writing.model_version
    )


def catch_up_group(stream: StreamRecord, rollout: RolloutRecord | None) -> str | None:
    """The consumer group (the rollout job's) that must have written the collection up to the
    state's end before this replica writes it; None when there is nothing to wait for: no
    group named, or the rollout into that collection is finished (every replica switched
    and the job is gone, so the replicas are its only writers)."""
    if stream.catch_up_group is None:
        return None
    if (
        rollout is not None
        and rollout.phase is RolloutPhase.FINISHED
        and rollout.candidate_collection == stream.collection
    ):
        return None
    return stream.catch_up_group


def caught_up(ends: Sequence[int], committed: Mapping[int, int]) -> bool:
    """True when the committed offsets (partition -> next offset; absent = nothing) reach
    every end offset (index = partition)."""
    return all(committed.get(partition, 0) >= end for partition, end in enumerate(ends))


def client_id(app_id: str, instance: str) -> str:
    """A replica's Kafka client.id: what a describe of its consumer group shows, and what its
    stream acknowledgement names."""
    return _NOT_ALLOWED.sub("_", f"{app_id}.{instance}")[:255]


def default_instance(host: str, pid: int) -> str:
    """A replica's name when none is configured: unique among the live processes of a host."""
    return _NOT_ALLOWED.sub("_", f"{host}.{pid}")[-50:]

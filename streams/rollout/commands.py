"""The rollout's steps as the operator runs them: start, status, cutover, rollback, finish.

Each reads the control topic (the live pointer and the rollout record), checks the step is
allowed in the rollout's phase, acts on Milvus, then writes the new records. The live pointer
is what every recall worker follows; on a Milvus server an alias (``<base>_live``) follows it
too, for readers that search Milvus directly.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from encoders.manifest import Manifest
from schemas import (
    LIVE_KEY,
    ROLLOUT_KEY,
    STREAM_ACK_PREFIX,
    STREAM_KEY,
    ContractError,
    LivePointer,
    PointerReason,
    RolloutPhase,
    RolloutRecord,
    StreamAck,
    StreamRecord,
    decode_live_pointer,
    decode_rollout_record,
    decode_stream_ack,
    decode_stream_record,
    encode,
    stream_ack_key,
)
from streams.rollout import plan
from streams.rollout.job import group_id
from streams.rollout.settings import RolloutSettings
from streams.rollout.state import committed_positions, end_offsets, listing_versions, read_catalogue
from vitrine.control import read_control, write_control
from vitrine.errors import VitrineError
from vitrine.vectorstore import CollectionLayout, connect, ensure_collection

log = logging.getLogger(__name__)


class RolloutRefused(VitrineError):
    """The step is not allowed now; ``reason`` says why, ``details`` what (for scripts)."""

    reason = "rollout_refused"

    def __init__(
        self, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.details = details or {}


@dataclass(frozen=True)
class Control:
    """The control records as read."""

    pointer: LivePointer | None
    rollout: RolloutRecord | None
    stream: StreamRecord | None = None
    acks: tuple[StreamAck, ...] = ()


def read(settings: RolloutSettings) -> Control:
    """The live pointer, rollout and stream records now (None where absent), and the
    embedders' stream acknowledgements."""
    records = read_control(settings)
    pointer = rollout = stream = None
    try:
        if records.get(LIVE_KEY) is not None:
            pointer = decode_live_pointer(records[LIVE_KEY])
        if records.get(ROLLOUT_KEY) is not None:
            rollout = decode_rollout_record(records[ROLLOUT_KEY])
        if records.get(STREAM_KEY) is not None:
            stream = decode_stream_record(records[STREAM_KEY])
    except ContractError as exc:
        raise RolloutRefused(
            f"control record unreadable: {exc}", reason="control_unreadable"
        ) from exc
    acks = []
    for key, value in records.items():
        if key.startswith(STREAM_ACK_PREFIX) and value is not None:
            try:
                acks.append(decode_stream_ack(value))
            except ContractError as exc:
                log.warning("acknowledgement %r ignored: %s", key, exc)
    return Control(pointer, rollout, stream, tuple(acks))


def _now() -> datetime:
    return datetime.now(UTC)


def alias_name(collection: str) -> str:
    """The Milvus alias that follows the live pointer on a Milvus server."""
    return f"{collection.split('__', 1)[0]}_live"


def _point_alias(settings: RolloutSettings, client: Any, collection: str) -> None:
    """On a Milvus server, point the live alias at ``collection``; milvus-lite has no aliases
    (it answers UNIMPLEMENTED), and there the live pointer alone says what is live."""
    if settings.milvus_is_lite:
        return
    alias = alias_name(collection)
    quiet = logging.getLogger("pymilvus.decorators")  # logs every refused call as an ERROR
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        try:
            client.alter_alias(collection_name=collection, alias=alias)
        except Exception as exc:
            if _unimplemented(exc):
                raise
            client.create_alias(collection_name=collection, alias=alias)
    except Exception as exc:
        if _unimplemented(exc):
            log.info("this Milvus has no aliases (milvus-lite): only the live pointer moves")
            return
        raise
    finally:
        quiet.setLevel(level)
    log.info("alias %s -> %s", alias, collection)


def _unimplemented(exc: Exception) -> bool:
    text = f"{exc!r} {getattr(exc, 'code', '')}"
    return "UNIMPLEMENTED" in text.upper() or "not implemented" in text.lower()


def _model_of(client: Any, collection: str) -> str | None:
    rows = client.query(collection, filter="version >= 0", output_fields=["model_version"], limit=1)
    return str(rows[0]["model_version"]) if rows else None


def start(settings: RolloutSettings, model_dir: Path) -> RolloutRecord:
    """Create the candidate collection for the model in ``model_dir`` and record the rollout;
    the same model again resumes the rollout in progress."""
    manifest = Manifest.read(model_dir)
    model = manifest.model_version
    control = read(settings)
    current = control.rollout
    if current is not None and current.phase is not RolloutPhase.FINISHED:
        if current.candidate_model_version == model and current.phase is RolloutPhase.STARTED:
            log.info("resuming the rollout of %s into %s", model, current.candidate_collection)
            return current
        raise RolloutRefused(
            f"a rollout of {current.candidate_model_version} is {current.phase.value}: finish "
            "it (`vitrine rollout finish`) before starting another",
            reason="rollout_in_progress",
        )
    client = connect(settings)
    try:
        live = control.pointer.collection if control.pointer else settings.milvus_collection
        if not client.has_collection(live):
            raise RolloutRefused(f"live collection {live} does not exist", reason="no_live")
        live_model = (
            control.pointer.model_version if control.pointer else _model_of(client, live)
        ) or "unknown"
        if live_model == model:
            raise RolloutRefused(f"model {model} is already live in {live}", reason="same_model")
        candidate = plan.candidate_name(live, model)
        shared = manifest.shared_space.get("dim") if manifest.shared_space else None
        index_type = "FLAT" if settings.milvus_is_lite else "HNSW"
        if client.has_collection(candidate):
            if control.pointer is not None and control.pointer.collection == candidate:
                raise RolloutRefused(f"{candidate} is live", reason="same_model")
            # Left by an abandoned attempt: rows of another run must not count as done.
            client.drop_collection(candidate)
        ensure_collection(
            client, CollectionLayout(candidate, manifest.embedding_dim, index_type, shared)
        )
        if control.pointer is None:
            write_control(
                settings,
                LIVE_KEY,
                encode(
                    LivePointer(
                        collection=live,
                        model_version=live_model,
                        changed_at=_now(),
                        reason=PointerReason.INITIAL,
                    )
                ),
            )
        _point_alias(settings, client, live)
    finally:
        client.close()
    record = RolloutRecord(
        phase=RolloutPhase.STARTED,
        live_collection=live,
        live_model_version=live_model,
        candidate_collection=candidate,
        candidate_model_version=model,
        model_dir=str(Path(model_dir).resolve()),
        started_at=_now(),
        updated_at=_now(),
        state_end_offsets=tuple(end_offsets(settings)),
    )
    write_control(settings, ROLLOUT_KEY, encode(record))
    log.info("rollout of %s started: candidate %s", model, candidate)
    return record


def _require(control: Control, *phases: RolloutPhase) -> RolloutRecord:
    rollout = control.rollout
    if rollout is None:
        raise RolloutRefused("no rollout: `vitrine rollout start --model DIR`", reason="no_rollout")
    if rollout.phase not in phases:
        allowed = " or ".join(p.value for p in phases)
        raise RolloutRefused(
            f"the rollout of {rollout.candidate_model_version} is {rollout.phase.value}; this "
            f"step needs {allowed}",
            reason="wrong_phase",
        )
    return rollout


def _moved(settings: RolloutSettings, rollout: RolloutRecord, phase: RolloutPhase) -> RolloutRecord:
    record = rollout.model_copy(update={"phase": phase, "updated_at": _now()})
    write_control(settings, ROLLOUT_KEY, encode(record))
    return record


def _point(settings: RolloutSettings, pointer: LivePointer) -> None:
    client = connect(settings)
    try:
        _point_alias(settings, client, pointer.collection)
    finally:
        client.close()
    write_control(settings, LIVE_KEY, encode(pointer))


def wait_complete(settings: RolloutSettings, rollout: RolloutRecord, wait_s: float) -> plan.Gaps:
    """The gaps left once the candidate caught up with the catalogue as it was when this was
    called (or ``wait_s`` passed): only the listings that were behind are read again, so a
    stream that keeps changing other listings cannot keep the check from ending."""
    catalogue = read_catalogue(settings)
    client = connect(settings)
    try:
        found = plan.gaps(catalogue, listing_versions(client, rollout.candidate_collection))
        deadline = time.monotonic() + wait_s
        while not found.ready and time.monotonic() < deadline:
            time.sleep(0.5)
            ids = [*found.missing, *found.behind, *found.deleted_but_present]
            rows = listing_versions(client, rollout.candidate_collection, ids)
            found = plan.gaps(catalogue, rows, only=set(ids))
    finally:
        client.close()
    return found


def cutover(settings: RolloutSettings, wait_s: float | None = None) -> RolloutRecord:
    """Make the candidate live once it holds every live listing at its newest version (waiting
    up to ``wait_s`` for the job to catch up); refused otherwise."""
    rollout = _require(read(settings), RolloutPhase.STARTED, RolloutPhase.ROLLED_BACK)
    wait = settings.rollout_wait_s if wait_s is None else wait_s
    found = wait_complete(settings, rollout, wait)
    if not found.ready:
        raise RolloutRefused(
            f"candidate {rollout.candidate_collection} is not complete: {found.describe()}",
            reason="candidate_incomplete",
        )
    _point(
        settings,
        LivePointer(
            collection=rollout.candidate_collection,
            model_version=rollout.candidate_model_version,
            model_dir=rollout.model_dir,
            changed_at=_now(),
            reason=PointerReason.CUTOVER,
        ),
    )
    log.info("cut over to %s (%s)", rollout.candidate_collection, rollout.candidate_model_version)
    return _moved(settings, rollout, RolloutPhase.CUT_OVER)


def rollback(settings: RolloutSettings) -> RolloutRecord:
    """Make the previous collection live again (kept fresh by the live embedder)."""
    control = read(settings)
    rollout = _require(control, RolloutPhase.CUT_OVER)
    if control.stream is not None and control.stream.collection == rollout.candidate_collection:
        # The replicas that switched wrote new versions into the candidate only.
        raise RolloutRefused(
            f"`finish` already handed the stream over to {rollout.candidate_collection}: "
            f"{rollout.live_collection} is no longer fed",
            reason="stream_handed_over",
        )
    _point(
        settings,
        LivePointer(
            collection=rollout.live_collection,
            model_version=rollout.live_model_version,
            changed_at=_now(),
            reason=PointerReason.ROLLBACK,
        ),
    )
    log.info("rolled back to %s (%s)", rollout.live_collection, rollout.live_model_version)
    return _moved(settings, rollout, RolloutPhase.ROLLED_BACK)


def finish(settings: RolloutSettings, wait_s: float | None = None) -> RolloutRecord:
    """Close the rollout. After a rollback: drop the candidate. After a cutover: hand the
    stream over to the candidate (the ``stream`` record), wait up to ``wait_s`` until every
    member of the embedders' group acknowledged writing it and the job wrote the candidate up
    to the state's end, mark the rollout finished (the job exits), then drop the old
    collection. Refused, with nothing dropped, when a member did not acknowledge in time."""
    control = read(settings)
    rollout = control.rollout
    if (
        rollout is not None
        and rollout.phase is RolloutPhase.FINISHED
        and control.stream is not None
        and control.stream.collection == rollout.candidate_collection
        and _drop(settings, rollout.live_collection)
    ):
        log.info("%s was left by an interrupted finish", rollout.live_collection)
        return rollout
    rollout = _require(control, RolloutPhase.CUT_OVER, RolloutPhase.ROLLED_BACK)
    cut_over = rollout.phase is RolloutPhase.CUT_OVER
    drop = rollout.live_collection if cut_over else rollout.candidate_collection
    if control.pointer is not None and control.pointer.collection == drop:
        raise RolloutRefused(f"{drop} is live; it is not dropped", reason="wrong_phase")
    if cut_over:
        wait = settings.rollout_wait_s if wait_s is None else wait_s
        _hand_over(settings, control, rollout, wait)
    record = _moved(settings, rollout, RolloutPhase.FINISHED)
    _drop(settings, drop)
    return record


def _drop(settings: RolloutSettings, collection: str) -> bool:
    """Drop ``collection``; False when it does not exist."""
    client = connect(settings)
    try:
        if not client.has_collection(collection):
            return False
        client.drop_collection(collection)
    finally:
        client.close()
    log.info("dropped %s", collection)
    return True


def _hand_over(
    settings: RolloutSettings, control: Control, rollout: RolloutRecord, wait_s: float
) -> None:
    """Name the candidate in the stream record and wait for every embedder to write it."""
    candidate, model = rollout.candidate_collection, rollout.candidate_model_version
    if control.pointer is None or control.pointer.collection != candidate:
        raise RolloutRefused(f"{candidate} is not live", reason="wrong_phase")
    job = group_id(settings, rollout)
    current = control.stream
    if current is None or (current.collection, current.model_version) != (candidate, model):
        stream = StreamRecord(
            collection=candidate,
            model_version=model,
            model_dir=rollout.model_dir,
            catch_up_group=job,
            changed_at=_now(),
        )
        write_control(settings, STREAM_KEY, encode(stream))
        log.info("stream handed over to %s (model %s)", candidate, model)
    deadline = time.monotonic() + wait_s
    while True:
        members = group_members(settings, settings.app_id)
        acks = {
            ack.client_id: (ack.collection, ack.model_version)
            for ack in read(settings).acks
            if ack.app_id == settings.app_id
        }
        shared = plan.duplicates(members)
        missing = plan.unacknowledged(members, acks, candidate, model)
        if not missing and not shared:
            break
        if time.monotonic() >= deadline:
            if shared:
                raise RolloutRefused(
                    f"members of {settings.app_id} share client ids {', '.join(shared)}: their "
                    "acknowledgements cannot be told apart (give each replica its own "
                    "VITRINE_INSTANCE_ID); nothing dropped",
                    reason="duplicate_client_ids",
                    details={"duplicate_client_ids": shared},
                )
            raise RolloutRefused(
                f"{len(missing)} of {len(members)} embedders did not acknowledge writing "
                f"{candidate} (model {model}) within {wait_s:.0f} s: {', '.join(missing)}; "
                "nothing dropped (their logs and vitrine_embedder_stream_switches_total say "
                "why; run `finish` again)",
                reason="stream_not_acknowledged",
                details={"not_acknowledged": missing, "members": sorted(members)},
            )
        time.sleep(0.5)
    # Every member writes the candidate itself now; what replicas wrote before their switch (or
    # replicas that left) reaches it through the job, which must get there before it stops.
    ends = end_offsets(settings)
    while True:
        behind = plan.remaining(ends, committed_positions(settings, job))
        if behind == 0:
            break
        if time.monotonic() >= deadline:
            raise RolloutRefused(
                f"the rollout job is {behind} state records behind; is `vitrine rollout run` "
                "running? nothing dropped",
                reason="rollout_job_behind",
                details={"behind": behind},
            )
        time.sleep(0.5)
    log.info("every embedder (%d) writes %s", len(members), candidate)
    _forget_acks(settings, control, members)


def group_members(settings: RolloutSettings, group: str, timeout_s: float = 10.0) -> list[str]:
    """Client ids of the members of consumer group ``group`` now (one per member)."""
    from confluent_kafka.admin import AdminClient

    from vitrine.kafka_config import admin_config

    admin = AdminClient(admin_config(settings))
    try:
        found = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group]
        description = found.result(timeout=timeout_s)
    except Exception as exc:
        raise RolloutRefused(
            f"consumer group {group} not described: {exc}", reason="group_unknown"
        ) from exc
    return [str(member.client_id) for member in description.members]


def _forget_acks(settings: RolloutSettings, control: Control, members: list[str]) -> None:
    """Tombstone the acknowledgements of replicas that are gone (one key per process)."""
    for ack in control.acks:
        if ack.app_id == settings.app_id and ack.client_id not in members:
            write_control(settings, stream_ack_key(ack.app_id, ack.client_id), None)


def status(settings: RolloutSettings) -> dict[str, Any]:
    """Where the rollout stands: phase, live and candidate counts, records behind, rate, ETA."""
    control = read(settings)
    rollout = control.rollout
    out: dict[str, Any] = {
        "live": control.pointer.collection if control.pointer else settings.milvus_collection,
        "live_model_version": control.pointer.model_version if control.pointer else None,
    }
    if control.stream is not None:
        out["stream"] = {
            "collection": control.stream.collection,
            "model_version": control.stream.model_version,
        }
        out["embedders"] = {
            ack.client_id: {"collection": ack.collection, "model_version": ack.model_version}
            for ack in control.acks
            if ack.app_id == settings.app_id
        }
    if rollout is None:
        out["phase"] = None
        return out
    client = connect(settings)
    try:
        counts: dict[str, int | None] = {}
        for name in {rollout.live_collection, rollout.candidate_collection}:
            if client.has_collection(name):
                rows = client.query(name, filter="", output_fields=["count(*)"])
                counts[name] = int(rows[0]["count(*)"])
            else:
                counts[name] = None
    finally:
        client.close()
    positions = committed_positions(settings, group_id(settings, rollout))
    ends = end_offsets(settings)
    bulk_left = plan.remaining(rollout.state_end_offsets, positions)
    out.update(
        phase=rollout.phase.value,
        candidate=rollout.candidate_collection,
        candidate_model_version=rollout.candidate_model_version,
        previous=rollout.live_collection,
        previous_model_version=rollout.live_model_version,
        rows={
            "previous": counts[rollout.live_collection],
            "candidate": counts[rollout.candidate_collection],
        },
        bulk_total=plan.remaining(rollout.state_end_offsets, {}),
        bulk_remaining=bulk_left,
        behind=plan.remaining(ends, positions),
        started_at=rollout.started_at.isoformat(),
    )
    progress = settings.rollout_home / f"{rollout.candidate_collection}.progress.json"
    if progress.is_file():  # written by a job on this machine
        try:
            data = json.loads(progress.read_text())
            out["rate_records_per_s"] = data.get("rate_records_per_s")
            out["eta_s"] = plan.eta_seconds(bulk_left, float(data.get("rate_records_per_s") or 0))
            out["progress_updated_at"] = data.get("updated_at")
        except (OSError, ValueError):
            pass
    return out

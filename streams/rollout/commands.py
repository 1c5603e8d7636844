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
    ContractError,
    LivePointer,
    PointerReason,
    RolloutPhase,
    RolloutRecord,
    decode_live_pointer,
    decode_rollout_record,
    encode,
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
    """The step is not allowed now; ``reason`` says why."""

    reason = "rollout_refused"


@dataclass(frozen=True)
class Control:
    """The control records as read."""

    pointer: LivePointer | None
    rollout: RolloutRecord | None


def read(settings: RolloutSettings) -> Control:
    """The live pointer and rollout record now (None where absent)."""
    records = read_control(settings)
    pointer = rollout = None
    try:
        if records.get(LIVE_KEY) is not None:
            pointer = decode_live_pointer(records[LIVE_KEY])
        if records.get(ROLLOUT_KEY) is not None:
            rollout = decode_rollout_record(records[ROLLOUT_KEY])
    except ContractError as exc:
        raise RolloutRefused(
            f"control record unreadable: {exc}", reason="control_unreadable"
        ) from exc
    return Control(pointer, rollout)


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
    rollout = _require(read(settings), RolloutPhase.CUT_OVER)
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


def finish(settings: RolloutSettings) -> RolloutRecord:
    """Drop the collection that is not live: the old one after a cutover, the candidate after
    a rollback."""
    control = read(settings)
    rollout = _require(control, RolloutPhase.CUT_OVER, RolloutPhase.ROLLED_BACK)
    drop = (
        rollout.live_collection
        if rollout.phase is RolloutPhase.CUT_OVER
        else rollout.candidate_collection
    )
    if control.pointer is not None and control.pointer.collection == drop:
        raise RolloutRefused(f"{drop} is live; it is not dropped", reason="wrong_phase")
    client = connect(settings)
    try:
        if client.has_collection(drop):
            client.drop_collection(drop)
    finally:
        client.close()
    log.info("dropped %s", drop)
    return _moved(settings, rollout, RolloutPhase.FINISHED)


def status(settings: RolloutSettings) -> dict[str, Any]:
    """Where the rollout stands: phase, live and candidate counts, records behind, rate, ETA."""
    control = read(settings)
    rollout = control.rollout
    out: dict[str, Any] = {
        "live": control.pointer.collection if control.pointer else settings.milvus_collection,
        "live_model_version": control.pointer.model_version if control.pointer else None,
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

"""The hand-over's pure decisions: when a replica switches, whom it waits for, when the job has
caught up, and the client id it is known by."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas import (
    ROLLOUT_KEY,
    STREAM_KEY,
    RolloutPhase,
    RolloutRecord,
    StreamRecord,
    encode,
)
from streams import handover
from streams.handover import Writing

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def stream(
    collection: str = "listings__m2", model: str = "m2", group: str | None = "g"
) -> StreamRecord:
    return StreamRecord(
        collection=collection,
        model_version=model,
        model_dir="/models/m2",
        catch_up_group=group,
        changed_at=T0,
    )


def rollout(phase: RolloutPhase, candidate: str = "listings__m2") -> RolloutRecord:
    return RolloutRecord(
        phase=phase,
        live_collection="listings",
        live_model_version="m1",
        candidate_collection=candidate,
        candidate_model_version="m2",
        model_dir="/models/m2",
        started_at=T0,
        updated_at=T0,
        state_end_offsets=(3, 4),
    )


def test_switch_only_when_the_record_names_another_collection_or_model() -> None:
    old = Writing("listings", "m1")
    assert not handover.switch_needed(None, old)
    assert handover.switch_needed(stream(), old)
    assert not handover.switch_needed(stream(), Writing("listings__m2", "m2"))
    assert handover.switch_needed(stream(model="m3"), Writing("listings__m2", "m2"))
    assert handover.switch_needed(stream(collection="other"), Writing("listings__m2", "m2"))


def test_the_job_is_waited_for_until_its_rollout_is_finished() -> None:
    assert handover.catch_up_group(stream(group=None), None) is None
    assert handover.catch_up_group(stream(), None) == "g"
    for phase in (RolloutPhase.STARTED, RolloutPhase.CUT_OVER, RolloutPhase.ROLLED_BACK):
        assert handover.catch_up_group(stream(), rollout(phase)) == "g"
    assert handover.catch_up_group(stream(), rollout(RolloutPhase.FINISHED)) is None
    # A finished rollout into another collection says nothing about this one's job.
    assert handover.catch_up_group(stream(), rollout(RolloutPhase.FINISHED, "other")) == "g"


def test_caught_up_needs_every_partition_at_its_end() -> None:
    assert handover.caught_up([], {})
    assert handover.caught_up([0, 0], {})  # empty partitions: nothing to write
    assert not handover.caught_up([5, 3], {0: 5})  # partition 1 never committed
    assert not handover.caught_up([5, 3], {0: 5, 1: 2})
    assert handover.caught_up([5, 3], {0: 5, 1: 3})
    assert handover.caught_up([5, 3], {0: 9, 1: 3})  # later records (other replicas) too


def test_records_are_read_from_control_records() -> None:
    record = stream()
    assert handover.stream_in({}) is None
    assert handover.stream_in({STREAM_KEY: None}) is None  # tombstone
    assert handover.stream_in({STREAM_KEY: b'{"schema_version": 1}'}) is None  # logged, ignored
    assert handover.stream_in({STREAM_KEY: encode(record)}) == record
    found = handover.rollout_in({ROLLOUT_KEY: encode(rollout(RolloutPhase.CUT_OVER))})
    assert found is not None and found.phase is RolloutPhase.CUT_OVER
    assert handover.rollout_in({ROLLOUT_KEY: b"not json"}) is None


def test_client_ids_are_kafka_safe_and_per_process() -> None:
    assert handover.client_id("vitrine-embedder", "host-1.42") == "vitrine-embedder.host-1.42"
    assert handover.client_id("app", "a b/c") == "app.a_b_c"
    assert len(handover.client_id("a" * 200, "b" * 50)) <= 255
    one = handover.default_instance("pod-7", 12)
    assert one == "pod-7.12" and one != handover.default_instance("pod-7", 13)
    assert len(handover.default_instance("h" * 80, 1)) == 50

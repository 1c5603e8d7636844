"""The rollout's pure decisions."""

from __future__ import annotations

from streams.rollout import plan
from streams.rollout.plan import Catalogue, StateRecord


def test_candidate_names_keep_the_base_and_fit_milvus() -> None:
    assert plan.candidate_name("listings", "cpu-2026.12.0+ab") == "listings__cpu_2026_12_0_ab"
    # A second rollout starts from the first one's candidate: one suffix, not two.
    assert plan.candidate_name("listings__cpu_1", "cpu-2") == "listings__cpu_2"


def test_a_batch_keeps_each_listings_last_record() -> None:
    records = [
        StateRecord(0, 5, b"a", b"v1"),
        StateRecord(1, 9, b"b", b"v1"),
        StateRecord(0, 6, b"a", None),
        StateRecord(0, 7, b"c", b"v3"),
    ]
    kept = plan.newest_per_listing(records)
    assert [(r.key, r.value) for r in kept] == [(b"b", b"v1"), (b"a", None), (b"c", b"v3")]
    assert plan.committable(records) == {0: 8, 1: 10}


def test_rows_at_or_above_the_state_version_are_done() -> None:
    entries = {"a": 3, "b": 3, "c": 3, "d": 1}
    stored = {"a": 3, "b": 2, "c": 7}
    assert plan.to_write(entries, stored) == ["b", "d"]


def test_cutover_needs_every_live_listing_at_its_newest_version() -> None:
    catalogue = Catalogue()
    for lid, version in (("a", 1), ("b", 2), ("c", 1), ("gone", 1)):
        catalogue.apply(lid, version)
    catalogue.apply("b", 3)
    catalogue.apply("gone", None)
    assert catalogue.versions == {"a": 1, "b": 3, "c": 1}
    found = plan.gaps(catalogue, {"a": 1, "b": 2, "gone": 1, "new": 1})
    assert (found.missing, found.behind, found.deleted_but_present) == (["c"], ["b"], ["gone"])
    assert not found.ready
    assert "1 missing (c)" in found.describe()
    # Newer rows and listings created since the catalogue was read are fine.
    assert plan.gaps(catalogue, {"a": 2, "b": 3, "c": 1, "new": 1}).ready
    # Checking again only the listings that were behind.
    again = plan.gaps(catalogue, {"b": 3}, only={"b", "c", "gone"})
    assert (again.missing, again.behind, again.deleted_but_present) == (["c"], [], [])


def test_progress_figures() -> None:
    assert plan.remaining([10, 5], {0: 4}) == 11
    assert plan.eta_seconds(100, 50.0) == 2.0
    assert plan.eta_seconds(100, 0.0) is None
    assert plan.eta_seconds(0, 0.0) == 0.0
    line = plan.progress_line(50, 200, 25.0, 150)
    assert line.startswith("bulk 50/200 (25.0%)") and "ETA 6s" in line and "behind 150" in line


def test_members_are_matched_to_acknowledgements_by_client_id() -> None:
    acks = {
        "app.a": ("listings__m2", "m2"),
        "app.b": ("listings", "m1"),  # still on the old model
        "app.gone": ("listings__m2", "m2"),  # left the group: not asked for
    }
    members = ["app.a", "app.b", "app.c"]
    assert plan.unacknowledged(members, acks, "listings__m2", "m2") == ["app.b", "app.c"]
    assert plan.unacknowledged(["app.a"], acks, "listings__m2", "m2") == []
    assert plan.unacknowledged([], acks, "listings__m2", "m2") == []
    # The right collection with another model is not an acknowledgement.
    assert plan.unacknowledged(["app.a"], acks, "listings__m2", "m3") == ["app.a"]


def test_shared_client_ids_are_found() -> None:
    assert plan.duplicates(["a", "b", "a", "c", "b"]) == ["a", "b"]
    assert plan.duplicates(["a", "b"]) == []

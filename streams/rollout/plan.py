"""Pure decisions of a rollout: names, what a batch of state records does, whether the candidate
may go live, progress figures."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


def candidate_name(live_collection: str, model_version: str) -> str:
    """The candidate collection of ``model_version`` next to ``live_collection``: the live
    one's base name (without a model suffix a previous rollout added) and the version."""
    slug = re.sub(r"[^A-Za-z0-9_]", "_", model_version)
    base = live_collection.split("__", 1)[0]
    return f"{base}__{slug}"[:255]


@dataclass(frozen=True)
class StateRecord:
    """One record of the state topic as read: a listing's entry bytes or a tombstone."""

    partition: int
    offset: int
    key: bytes
    value: bytes | None


def newest_per_listing(records: Sequence[StateRecord]) -> list[StateRecord]:
    """The last record of each listing in the batch (the topic is in version order per key),
    in first-seen order."""
    last: dict[bytes, StateRecord] = {}
    for record in records:
        last.pop(record.key, None)
        last[record.key] = record
    return list(last.values())


def to_write(entries: Mapping[str, int], stored: Mapping[str, int]) -> list[str]:
    """Listings whose state version is above the candidate's row (or that have none): the
    ones to fetch, encode and write. The others are done — never encoded twice."""
    return [lid for lid, version in entries.items() if stored.get(lid, -1) < version]


def committable(records: Sequence[StateRecord]) -> dict[int, int]:
    """Per partition, the offset to commit once ``records`` are durable (last + 1)."""
    out: dict[int, int] = {}
    for record in records:
        out[record.partition] = max(out.get(record.partition, 0), record.offset + 1)
    return out


@dataclass
class Catalogue:
    """The state topic compacted in memory: live listings and their versions, deleted ones."""

    versions: dict[str, int] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    def apply(self, listing_id: str, version: int | None) -> None:
        """A record: an entry at ``version``, or a tombstone (None)."""
        if version is None:
            self.versions.pop(listing_id, None)
            self.deleted.add(listing_id)
        else:
            self.versions[listing_id] = version
            self.deleted.discard(listing_id)


@dataclass(frozen=True)
class Gaps:
    """How the candidate differs from the catalogue."""

    missing: list[str]
    behind: list[str]
    deleted_but_present: list[str]

    @property
    def ready(self) -> bool:
        """True when the candidate holds every live listing at its newest version."""
        return not (self.missing or self.behind or self.deleted_but_present)

    def describe(self, limit: int = 5) -> str:
        """For people: counts and a few ids of each gap."""
        parts = []
        for name, ids in (
            ("missing", self.missing),
            ("at an older version", self.behind),
            ("deleted but still present", self.deleted_but_present),
        ):
            if ids:
                shown = ", ".join(sorted(ids)[:limit])
                parts.append(f"{len(ids)} {name} ({shown}{', ...' if len(ids) > limit else ''})")
        return "; ".join(parts) or "none"


def gaps(catalogue: Catalogue, candidate: Mapping[str, int], only: set[str] | None = None) -> Gaps:
    """Compare the candidate's rows (listing -> version) with the catalogue read before them
    (``only``: just these listings, the candidate's rows of them given).

    Rows newer than the catalogue, or of listings created since, are fine: the candidate was
    read later and the job keeps following the state.
    """
    versions = catalogue.versions
    live = versions if only is None else {lid: versions[lid] for lid in only if lid in versions}
    deleted = catalogue.deleted if only is None else catalogue.deleted & only
    missing = [lid for lid in live if lid not in candidate]
    behind = [lid for lid, v in live.items() if lid in candidate and candidate[lid] < v]
    present = [lid for lid in deleted if lid in candidate]
    return Gaps(missing, behind, present)


def remaining(ends: Sequence[int], positions: Mapping[int, int]) -> int:
    """Records from ``positions`` (per partition; absent = from the start) to ``ends``."""
    return sum(max(0, end - positions.get(p, 0)) for p, end in enumerate(ends))


def eta_seconds(left: int, rate: float) -> float | None:
    """Seconds until ``left`` records are done at ``rate`` per second; None when unknown."""
    if left <= 0:
        return 0.0
    if rate <= 0:
        return None
    return left / rate


def progress_line(done: int, total: int, rate: float, behind: int) -> str:
    """One status line: bulk progress, rate, ETA, records behind."""
    share = 100.0 * done / total if total else 100.0
    eta = eta_seconds(total - done, rate)
    shown = "--" if eta is None else f"{eta:.0f}s"
    return f"bulk {done}/{total} ({share:.1f}%)  {rate:.0f} records/s  ETA {shown}  behind {behind}"


def unacknowledged(
    members: Sequence[str], acks: Mapping[str, tuple[str, str]], collection: str, model: str
) -> list[str]:
    """The members of the embedders' group (client ids) whose acknowledgement (client id ->
    (collection, model version)) does not say they write ``collection`` with ``model``."""
    return sorted({m for m in members if acks.get(m) != (collection, model)})


def duplicates(members: Sequence[str]) -> list[str]:
    """Client ids that more than one member carries: their acknowledgements cannot be told
    apart."""
    return sorted(m for m, n in Counter(members).items() if n > 1)

"""The explorer's catalogue view: newest version wins, deletions remove, stale events do not."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.explorer.catalog import CatalogEntry, apply_event
from schemas import EventType, ListingEvent, Price


def _event(version: int, kind: EventType = EventType.UPDATED, title: str = "t") -> ListingEvent:
    content: dict[str, Any] = {}
    if kind is not EventType.DELETED:
        content = {
            "title": title,
            "image_urls": (f"https://img.example/{version}.jpg",),
            "category": "Hoodies & Sweatshirts",
            "price": Price(amount=10, currency="EUR"),
            "seller_id": "s1",
            "marketplace": "de",
        }
    return ListingEvent(
        event_id=f"e{version}",
        event_type=kind,
        listing_id="L1",
        version=version,
        occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
        **content,
    )


def test_newest_version_wins_whatever_the_order() -> None:
    entries: dict[str, CatalogEntry] = {}
    versions: dict[str, int] = {}
    assert apply_event(entries, versions, _event(3, title="third"))
    assert not apply_event(entries, versions, _event(2, title="second"))
    assert not apply_event(entries, versions, _event(3, title="again"))
    entry = entries["L1"]
    assert (entry.version, entry.title, entry.cover_url) == (
        3,
        "third",
        "https://img.example/3.jpg",
    )
    assert entry.category == "Hoodies & Sweatshirts"


def test_deletion_removes_and_older_events_do_not_resurrect() -> None:
    entries: dict[str, CatalogEntry] = {}
    versions: dict[str, int] = {}
    apply_event(entries, versions, _event(1))
    assert apply_event(entries, versions, _event(2, EventType.DELETED))
    assert "L1" not in entries
    assert not apply_event(entries, versions, _event(1))
    assert "L1" not in entries
    assert apply_event(entries, versions, _event(5, EventType.CREATED, title="back"))
    assert entries["L1"].title == "back"

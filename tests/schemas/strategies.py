"""Hypothesis strategies: valid models built from Python values, and valid payloads
generated from the JSON Schema files themselves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from schemas import (
    CatalogueEntry,
    DeadLetter,
    DeadLetterStage,
    EmbeddedEvent,
    EventType,
    ListingEvent,
    LivePointer,
    Outcome,
    PointerReason,
    Price,
    PriceRange,
    RecallFilters,
    RecallItem,
    RecallQuery,
    RecallReply,
    RecallRequest,
    RecallStatus,
    RolloutPhase,
    RolloutRecord,
    StreamAck,
    StreamRecord,
    limits,
    load_schema,
)

from .schema_strategy import SchemaStrategies

_ZONES = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(-timedelta(hours=8)),
    timezone(timedelta(hours=23, minutes=59)),
]

datetimes = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2200, 12, 31),
    timezones=st.sampled_from(_ZONES),
)


def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


timestamp_strings = datetimes.map(_rfc3339)


def _pattern(regex: str) -> st.SearchStrategy[str]:
    return st.from_regex(regex.removesuffix("$") + r"\Z")


listing_ids = _pattern(limits.LISTING_ID_PATTERN)
seller_ids = _pattern(limits.SELLER_ID_PATTERN)
categories = _pattern(limits.CATEGORY_PATTERN)
event_ids = _pattern(limits.EVENT_ID_PATTERN)
marketplaces = _pattern(limits.MARKETPLACE_PATTERN)
model_versions = _pattern(limits.MODEL_VERSION_PATTERN)
reason_codes = _pattern(limits.REASON_PATTERN)
currencies = _pattern(limits.CURRENCY_PATTERN)
image_urls = _pattern(limits.IMAGE_URL_PATTERN).filter(lambda u: len(u) <= limits.MAX_URL_CHARS)
versions = st.integers(0, limits.MAX_VERSION)
unit = st.floats(0, 1, allow_nan=False)
amounts = st.floats(0, limits.MAX_PRICE, allow_nan=False)
prices = st.builds(Price, amount=amounts, currency=currencies)
titles = st.text(min_size=1, max_size=limits.MAX_TITLE_CHARS)


def _tuples(elements: st.SearchStrategy[Any], min_size: int, max_size: int) -> st.SearchStrategy:
    return st.lists(elements, min_size=min_size, max_size=max_size).map(tuple)


@st.composite
def listing_events(draw: st.DrawFn) -> ListingEvent:
    """Valid listing events; deletes sometimes carry content, sometimes not."""
    event_type = draw(st.sampled_from(EventType))
    with_content = event_type is not EventType.DELETED or draw(st.booleans())
    content: dict[str, Any] = {}
    if with_content:
        content = {
            "title": draw(titles),
            "image_urls": draw(_tuples(image_urls, 1, 4)),
            "category": draw(categories),
            "price": draw(prices),
            "seller_id": draw(seller_ids),
            "marketplace": draw(marketplaces),
        }
    return ListingEvent(
        event_id=draw(event_ids),
        event_type=event_type,
        listing_id=draw(listing_ids),
        version=draw(versions),
        occurred_at=draw(datetimes),
        **content,
    )


@st.composite
def embedded_events(draw: st.DrawFn) -> EmbeddedEvent:
    """Valid embedded events."""
    outcome = draw(st.sampled_from(Outcome))
    score = None if outcome is Outcome.DELETED else draw(unit)
    return EmbeddedEvent(
        event_id=draw(st.none() | event_ids),
        listing_id=draw(listing_ids),
        version=draw(versions),
        outcome=outcome,
        model_version=draw(model_versions),
        mismatch_score=score,
        occurred_at=draw(datetimes),
        embedded_at=draw(datetimes),
        freshness_seconds=draw(st.floats(0, limits.MAX_FRESHNESS_SECONDS, allow_nan=False)),
        write_token=draw(st.none() | st.integers(0, 2**63 - 1)),
    )


@st.composite
def price_ranges(draw: st.DrawFn) -> PriceRange:
    """Valid price ranges (min <= max when both are set)."""
    low, high = sorted([draw(amounts), draw(amounts)])
    return PriceRange(
        min=draw(st.sampled_from([low, None])),
        max=draw(st.sampled_from([high, None])),
        currency=draw(currencies),
    )


queries = st.one_of(
    st.builds(RecallQuery, listing_id=listing_ids),
    st.builds(
        RecallQuery,
        vector=_tuples(st.floats(allow_nan=False, allow_infinity=False, width=32), 1, 16),
    ),
)
filters = st.builds(
    RecallFilters,
    categories=st.none() | _tuples(categories, 1, 3),
    price_range=st.none() | price_ranges(),
    exclude_sellers=_tuples(seller_ids, 0, 3),
    exclude_listings=_tuples(listing_ids, 0, 3),
    max_mismatch=st.none() | unit,
)
recall_requests = st.builds(
    RecallRequest,
    request_id=event_ids,
    query=queries,
    k=st.integers(1, limits.MAX_K),
    filters=st.none() | filters,
    deadline=st.none() | datetimes,
)
recall_items = st.builds(
    RecallItem,
    listing_id=listing_ids,
    score=st.floats(-1, 1),
    mismatch_score=st.none() | unit,
    category=st.none() | categories,
    price=st.none() | prices,
)
took = st.floats(0, 60, allow_nan=False)
recall_replies = st.one_of(
    st.builds(
        RecallReply,
        request_id=event_ids,
        status=st.just(RecallStatus.OK),
        items=_tuples(recall_items, 0, 5),
        model_version=model_versions,
        took_seconds=took,
    ),
    st.builds(
        RecallReply,
        request_id=st.none() | event_ids,
        status=st.sampled_from([s for s in RecallStatus if s is not RecallStatus.OK]),
        reason=reason_codes,
        message=st.none() | st.text(max_size=50),
        took_seconds=took,
    ),
)
dead_letters = st.builds(
    DeadLetter,
    topic=_pattern(limits.TOPIC_PATTERN),
    partition=st.integers(0, limits.MAX_PARTITION),
    offset=st.integers(0, limits.MAX_OFFSET),
    stage=st.sampled_from(DeadLetterStage),
    reason=reason_codes,
    message=st.text(max_size=limits.MAX_MESSAGE_CHARS + 50),
    field=st.none() | st.text(max_size=40),
    failed_at=datetimes,
    attempts=st.none() | st.integers(1, limits.MAX_ATTEMPTS),
    model_version=st.none() | model_versions,
)


def payloads(name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Payloads generated from the JSON Schema file of contract ``name``."""
    schema = load_schema(name)
    return SchemaStrategies(schema, {"date-time": timestamp_strings}).strategy(schema)


collections = _pattern(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
sha256s = _pattern(r"^[0-9a-f]{64}$")
paths = st.text(min_size=1, max_size=200)


@st.composite
def catalogue_entries(draw: st.DrawFn) -> CatalogueEntry:
    """Valid catalogue entries."""
    return CatalogueEntry(
        listing_id=draw(listing_ids),
        version=draw(versions),
        occurred_at=draw(datetimes),
        title=draw(titles),
        cover_url=draw(image_urls),
        cover_sha256=draw(sha256s),
        category=draw(categories),
        price=draw(prices),
        seller_id=draw(seller_ids),
        marketplace=draw(marketplaces),
        event_id=draw(st.none() | event_ids),
    )


@st.composite
def live_pointers(draw: st.DrawFn) -> LivePointer:
    """Valid live pointers."""
    return LivePointer(
        collection=draw(collections),
        model_version=draw(model_versions),
        model_dir=draw(st.none() | paths),
        changed_at=draw(datetimes),
        reason=draw(st.none() | st.sampled_from(PointerReason)),
    )


@st.composite
def rollout_records(draw: st.DrawFn) -> RolloutRecord:
    """Valid rollout records."""
    return RolloutRecord(
        phase=draw(st.sampled_from(RolloutPhase)),
        live_collection=draw(collections),
        live_model_version=draw(model_versions),
        candidate_collection=draw(collections),
        candidate_model_version=draw(model_versions),
        model_dir=draw(paths),
        started_at=draw(datetimes),
        updated_at=draw(datetimes),
        state_end_offsets=draw(_tuples(st.integers(0, limits.MAX_OFFSET), 0, 8)),
    )


groups = _pattern(r"^[A-Za-z0-9._-]{1,249}$")
app_ids = _pattern(r"^[A-Za-z0-9._-]{1,200}$")
client_ids = _pattern(r"^[A-Za-z0-9._-]{1,255}$")


@st.composite
def stream_records(draw: st.DrawFn) -> StreamRecord:
    """Valid stream records."""
    return StreamRecord(
        collection=draw(collections),
        model_version=draw(model_versions),
        model_dir=draw(paths),
        catch_up_group=draw(st.none() | groups),
        changed_at=draw(datetimes),
    )


@st.composite
def stream_acks(draw: st.DrawFn) -> StreamAck:
    """Valid stream acknowledgements."""
    return StreamAck(
        app_id=draw(app_ids),
        client_id=draw(client_ids),
        collection=draw(collections),
        model_version=draw(model_versions),
        acked_at=draw(datetimes),
    )

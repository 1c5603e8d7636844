"""Building replies (pure): items from hits, and one constructor per status."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime

from schemas import Price, RecallItem, RecallReply, RecallRequest, RecallStatus, limits

from .index import Hit

_CATEGORY = re.compile(limits.CATEGORY_PATTERN)
_CURRENCY = re.compile(limits.CURRENCY_PATTERN)
_LISTING_ID = re.compile(limits.LISTING_ID_PATTERN)
_REQUEST_ID = re.compile(limits.REQUEST_ID_PATTERN)
_MODEL_VERSION = re.compile(limits.MODEL_VERSION_PATTERN)
_MESSAGE_CHARS = limits.MAX_MESSAGE_CHARS


def deadline_passed(request: RecallRequest, now: datetime) -> bool:
    """True when the caller has already given up on ``request`` (``now`` is timezone-aware)."""
    return request.deadline is not None and request.deadline <= now


def item_from_hit(hit: Hit) -> RecallItem | None:
    """A reply item, or None for a hit that cannot be reported (non-finite score, bad id).

    Row fields that do not fit the reply contract (a float32 mismatch score a hair above 1, an
    empty category) are left out of the item rather than failing the whole reply.
    """
    if not math.isfinite(hit.score) or not _LISTING_ID.fullmatch(hit.listing_id):
        return None
    mismatch = hit.mismatch_score
    if mismatch is not None and math.isfinite(mismatch):
        mismatch = min(1.0, max(0.0, float(mismatch)))
    else:
        mismatch = None
    category = hit.category
    fits = category and len(category) <= limits.MAX_CATEGORY_CHARS
    if not (fits and _CATEGORY.fullmatch(category or "")):
        category = None
    price = None
    if (
        hit.price is not None
        and math.isfinite(hit.price)
        and 0 <= hit.price <= limits.MAX_PRICE
        and hit.currency
        and _CURRENCY.fullmatch(hit.currency)
    ):
        price = Price(amount=float(hit.price), currency=hit.currency)
    return RecallItem(
        listing_id=hit.listing_id,
        score=float(hit.score),
        mismatch_score=mismatch,
        category=category,
        price=price,
    )


def select_items(hits: Iterable[Hit], k: int, exclude: str | None = None) -> list[RecallItem]:
    """The best ``k`` reportable items, without ``exclude`` (the seed) and without repeats."""
    items: list[RecallItem] = []
    seen: set[str] = set()
    for hit in hits:
        if hit.listing_id == exclude or hit.listing_id in seen:
            continue
        item = item_from_hit(hit)
        if item is None:
            continue
        seen.add(hit.listing_id)
        items.append(item)
        if len(items) == k:
            break
    return items


def safe_model_version(*candidates: str | None, default: str) -> str:
    """The first candidate that fits the contract's model_version pattern, else ``default``."""
    for candidate in candidates:
        if candidate and _MODEL_VERSION.fullmatch(candidate):
            return candidate
    return default


def salvage_request_id(payload: object) -> str | None:
    """The request_id of a payload that failed validation, when it is itself valid."""
    if isinstance(payload, dict):
        value = payload.get("request_id")
        if isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return None


def ok(request_id: str, items: list[RecallItem], model_version: str, took: float) -> RecallReply:
    """An ``ok`` reply."""
    return RecallReply(
        request_id=request_id,
        status=RecallStatus.OK,
        items=tuple(items),
        model_version=model_version,
        took_seconds=max(0.0, took),
    )


def failure(
    status: RecallStatus, reason: str, message: str, request_id: str | None, took: float
) -> RecallReply:
    """A non-ok reply with a stable ``reason`` and a message for people (truncated)."""
    return RecallReply(
        request_id=request_id,
        status=status,
        reason=reason,
        message=message[:_MESSAGE_CHARS] if message else None,
        took_seconds=max(0.0, took),
    )

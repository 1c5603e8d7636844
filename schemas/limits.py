"""Limits that protect the pipeline, mirrored from the JSON Schema files.

The schema files are the source of truth; ``tests/schemas/test_limits.py`` checks that every
constant here equals the value in the files, so the two cannot drift apart.
"""

from __future__ import annotations

#: Byte cap checked before a payload is parsed at all.
MAX_PAYLOAD_BYTES = 1024 * 1024

#: listing_id and seller_id: Milvus VARCHAR primary key and filter literal, so no quotes,
#: backslashes or whitespace can ever reach a filter expression.
LISTING_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
SELLER_ID_PATTERN = LISTING_ID_PATTERN
MAX_LISTING_ID_CHARS = 64
#: category: free text as marketplaces name them ("Hoodies & Sweatshirts", "Küche/Messer"), up to
#: MAX_CATEGORY_CHARS characters with at least one that is not whitespace, and no control
#: characters (C0, DEL, C1). It is only ever written into a filter as an escaped literal
#: (``recall.filters.quote``). Milvus counts VARCHAR length in bytes, so the column allows
#: 4 bytes per character.
#: Written so that it matches in linear time (leading whitespace, the first other character,
#: then anything printable): a pattern like ``P*NP*`` backtracks quadratically on long input.
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
CATEGORY_PATTERN = rf"^[^\S{_CONTROL}]*[^\s{_CONTROL}][^{_CONTROL}]*$"
MAX_CATEGORY_CHARS = 128
MAX_CATEGORY_BYTES = 4 * MAX_CATEGORY_CHARS
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
REQUEST_ID_PATTERN = EVENT_ID_PATTERN
MARKETPLACE_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$"
REASON_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
CURRENCY_PATTERN = r"^[A-Z]{3}$"
IMAGE_URL_PATTERN = r"^https?://[!-~]+$"
TOPIC_PATTERN = r"^[A-Za-z0-9._-]{1,249}$"
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)

MAX_VERSION = 2**63 - 1
MAX_TITLE_CHARS = 500
MAX_IMAGE_URLS = 24
MAX_URL_CHARS = 2048
MAX_PRICE = 1_000_000_000_000
MAX_FRESHNESS_SECONDS = 365 * 24 * 3600

MAX_K = 200
#: Query by text: a phrase, like a title.
MAX_QUERY_TEXT_CHARS = MAX_TITLE_CHARS
#: Query by photo: decoded bytes (checked by the worker: reason too_large); base64 of this many
#: bytes stays well under MAX_PAYLOAD_BYTES.
MAX_QUERY_IMAGE_BYTES = 512 * 1024
BASE64_PATTERN = r"^[A-Za-z0-9+/]*={0,2}$"
MAX_VECTOR_DIM = 4096
MAX_FILTER_CATEGORIES = 100
MAX_EXCLUDE_SELLERS = 1000
MAX_EXCLUDE_LISTINGS = 1000
MAX_REPLY_ITEMS = MAX_K
MAX_MESSAGE_CHARS = 1000
MAX_FIELD_PATH_CHARS = 256
#: Partition and offset travel as decimal strings in dead-letter headers; these bounds are
#: what the header patterns allow (9 and 18 digits), far above anything Kafka reaches.
MAX_PARTITION = 999_999_999
MAX_OFFSET = 10**18 - 1
MAX_ATTEMPTS = 999_999

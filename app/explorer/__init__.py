"""``vitrine explorer``: a web page to look at recall answers as pictures and pivot on them."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``vitrine explorer``."""
    explorer = sub.add_parser(
        "explorer",
        help="serve a web page that shows a listing's neighbours as cards",
        description=(
            "Serve the recall explorer: pick a listing (or click a card) to see similar listings "
            "as cards with their cover photo, title, category, price, similarity and mismatch "
            "badge; filter by category, price and mismatch; a strip shows freshness, events/s "
            "and dead letters from the embedder's /metrics. It talks to the system only through "
            "the recall client (Kafka request-reply); titles and covers come from tailing "
            "listings.events; thumbnails are fetched through the embedder's guarded fetcher. "
            "Settings: VITRINE_EXPLORER_* (host, port, metrics URL, k, thumbnail size)."
        ),
    )
    explorer.add_argument("--host", default=None, help="listen address (VITRINE_EXPLORER_HOST)")
    explorer.add_argument(
        "--port", type=int, default=None, help="listen port, 0 = any (VITRINE_EXPLORER_PORT)"
    )
    explorer.set_defaults(func=cmd_explorer)


def cmd_explorer(args: argparse.Namespace) -> int:
    """Run the explorer until SIGINT/SIGTERM."""
    import asyncio

    from vitrine.settings import load

    from .server import run
    from .settings import ExplorerSettings

    settings = load(ExplorerSettings)
    update = {}
    if args.host is not None:
        update["explorer_host"] = args.host
    if args.port is not None:
        update["explorer_port"] = args.port
    if update:
        settings = ExplorerSettings.model_validate({**settings.model_dump(), **update})
    return asyncio.run(run(settings))

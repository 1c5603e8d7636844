"""The `vitrine` command line: parses, sets up logging, hands off.

Each subpackage contributes its commands through an ``add_commands(subparsers)`` function;
every command sets ``func`` to a callable taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from vitrine.errors import VitrineError

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "vitrine.infra.cli",
    "vitrine.topics",
    "encoders.cli",
    "streams.cli",
    "streams.rollout.cli",
    "recall.cli",
    "app.demo",
    "app.explorer",
)

EPILOG = """\
Configuration comes from VITRINE_* environment variables and an optional TOML file named by
VITRINE_CONFIG (or --config). Unset VITRINE_KAFKA_BOOTSTRAP / VITRINE_MILVUS_URI mean "use the
local broker and milvus-lite server that `vitrine infra up` manages".

Typical first run:
  vitrine infra up        # fetch Kafka with Maven (first time), start it and milvus-lite
  vitrine topics create   # create the topics, idempotent
  vitrine infra status
  vitrine infra down
"""


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="vitrine",
        description="Near-real-time multimodal listing embeddings: Kafka in, Milvus out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML settings file (same as VITRINE_CONFIG)")
    parser.add_argument(
        "--log-level", help="DEBUG, INFO, WARNING or ERROR (same as VITRINE_LOG_LEVEL)"
    )
    parser.add_argument("--version", action="version", version=f"vitrine {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A module that is not written yet contributes nothing; a missing dependency of a
            # module that exists is a real error.
            if exc.name is not None and name.startswith(exc.name):
                continue
            raise
        module.add_commands(sub)
    return parser


def _version() -> str:
    from vitrine import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vitrine` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        os.environ["VITRINE_CONFIG"] = args.config
    if args.log_level:
        os.environ["VITRINE_LOG_LEVEL"] = args.log_level
    level = os.environ.get("VITRINE_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VitrineError as exc:
        print(f"vitrine: error [{exc.reason}]: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

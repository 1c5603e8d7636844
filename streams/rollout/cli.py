"""``vitrine rollout``: parse, set up, hand off (docs/operations.md, "Model rollout")."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from pathlib import Path

from streams.rollout.settings import RolloutSettings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Re-embed the catalogue with a new model without downtime. `start` creates the candidate
collection and runs the job that fills it from the catalogue's state topic (bulk, then the
delta as the live embedder writes new versions) until stopped; `run` resumes that job (after a
crash or on another machine); `status` shows progress; `cutover` moves the live pointer to the
candidate once it holds every live listing at its newest version; `rollback` moves it back;
`finish` hands the embedders' stream over to the new model (no restart) and drops the
collection that is no longer live.
"""


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `vitrine rollout`."""
    parser = sub.add_parser(
        "rollout",
        help="re-embed the catalogue with a new model and switch to it without downtime",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    start = verbs.add_parser(
        "start",
        help="create the candidate and run the job",
        description="Create the candidate collection for the model in DIR, record the rollout "
        "on the control topic and run the job that fills the candidate (bulk, then delta). The "
        "same model again resumes the rollout in progress.",
    )
    start.add_argument("--model", required=True, type=Path, metavar="DIR", help="new model")
    start.add_argument(
        "--no-run", action="store_true", help="only create the candidate; run the job later"
    )
    run = verbs.add_parser(
        "run",
        help="run (resume) the job of the rollout in progress",
        description="Run the rollout job from where its consumer group committed: after a "
        "crash, on another machine, or to keep the candidate fed until `finish`.",
    )
    for verb in (start, run):
        verb.add_argument(
            "--until-caught-up",
            action="store_true",
            help="exit once the job reached the end of the state (default: keep following it)",
        )
        verb.set_defaults(func=cmd_run)
    run.add_argument(
        "--from-start",
        action="store_true",
        help="read the state from its start again (listings already in the candidate at their "
        "version are skipped without fetching or encoding): retries covers that failed",
    )
    verbs.add_parser(
        "status",
        help="phase, row counts, records behind, rate, ETA",
        description="Print the rollout's phase, the row counts of the previous and candidate "
        "collections, bulk records remaining, records behind and (on the job's machine) rate "
        "and ETA, as JSON.",
    ).set_defaults(func=cmd_status)
    cut = verbs.add_parser(
        "cutover",
        help="make the candidate live (refused until complete)",
        description="Move the live pointer (and on a Milvus server the live alias) to the "
        "candidate once it holds every live listing at its newest version; refused with the "
        "gaps otherwise.",
    )
    cut.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="how long to wait for the candidate to catch up (VITRINE_ROLLOUT_WAIT_S)",
    )
    cut.set_defaults(func=cmd_cutover)
    verbs.add_parser(
        "rollback",
        help="make the previous collection live again",
        description="Move the live pointer back to the collection that was live when the "
        "rollout started (kept fresh by the live embedder).",
    ).set_defaults(func=cmd_rollback)
    end = verbs.add_parser(
        "finish",
        help="hand the stream to the new model, then drop the collection that is not live",
        description="After a cutover: name the candidate and the new model in the stream "
        "record, wait until every embedder replica switched to them without a restart (each "
        "acknowledges on the control topic) and the job reached the state's end, mark the "
        "rollout finished (the job exits) and drop the previous collection; refused, with "
        "nothing dropped, when a replica did not acknowledge in time. After a rollback: drop "
        "the candidate.",
    )
    end.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="how long to wait for the embedders to switch (VITRINE_ROLLOUT_WAIT_S)",
    )
    end.set_defaults(func=cmd_finish)


def _settings() -> RolloutSettings:
    from vitrine.settings import load

    return load(RolloutSettings)


def cmd_run(args: argparse.Namespace) -> int:
    """`start` (create, then run) and `run` (resume)."""
    from streams.rollout import commands
    from streams.rollout.job import RolloutJob
    from vitrine.observability import serve_metrics

    settings = _settings()
    if args.verb == "start":
        rollout = commands.start(settings, args.model)
        print(
            f"candidate {rollout.candidate_collection} for model {rollout.candidate_model_version}"
        )
        if args.no_run:
            return 0
    else:
        found = commands.read(settings).rollout
        if found is None or found.phase.value == "finished":
            print("no rollout in progress")
            return 1
        rollout = found
    serve_metrics(settings.metrics_port)
    job = RolloutJob(settings, rollout)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, job.request_stop)
        summary = await job.run(
            until_caught_up=args.until_caught_up, from_start=getattr(args, "from_start", False)
        )
        print(f"\n{summary.to_json()}", flush=True)
        return 0

    return asyncio.run(main())


def cmd_status(args: argparse.Namespace) -> int:
    """Print the rollout's status as JSON."""
    from streams.rollout import commands

    print(json.dumps(commands.status(_settings()), indent=2, default=str))
    return 0


def cmd_cutover(args: argparse.Namespace) -> int:
    """Move the live pointer to the candidate."""
    from streams.rollout import commands

    record = commands.cutover(_settings(), args.wait)
    print(f"live: {record.candidate_collection} ({record.candidate_model_version})")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Move the live pointer back."""
    from streams.rollout import commands

    record = commands.rollback(_settings())
    print(f"live: {record.live_collection} ({record.live_model_version})")
    return 0


def cmd_finish(args: argparse.Namespace) -> int:
    """Drop the collection that is not live."""
    from streams.rollout import commands

    try:
        record = commands.finish(_settings(), args.wait)
    except commands.RolloutRefused as exc:
        if exc.details:  # for scripts: which replicas did not switch
            print(json.dumps({"reason": exc.reason, **exc.details}, sort_keys=True))
        raise
    print(f"rollout of {record.candidate_model_version} finished")
    return 0

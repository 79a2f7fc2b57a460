"""``prunebench worker``: one more worker for a study in a shared storage (PostgreSQL)."""

from __future__ import annotations

import argparse
import json
import sys

from prunebench.search.commands.arguments import (
    add_runtime_arguments,
    add_storage_arguments,
    positive,
    training_runtime,
    whole,
)
from prunebench.search.retrying import DEFAULT_DB_OUTAGE_S
from prunebench.search.storage import DEFAULT_HEARTBEAT_S, DEFAULT_MAX_RETRY

NAME = "worker"
HELP = ("join a study in a shared storage and run its trials on this machine (start as many "
        "as you like, on as many machines as match the study's profile)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``prunebench worker``."""
    add_storage_arguments(p)
    p.add_argument("--trials", type=whole(1, 10), default=None, metavar="N",
                   help="stop after N trials of this worker (default: until the study's budget)")
    p.add_argument("--force", action="store_true",
                   help="measure even if this machine does not match the study's hardware "
                        "profile (measurements are recorded as forced)")
    p.add_argument("--no-cache", action="store_true",
                   help="re-measure configurations already measured in this study")
    p.add_argument("--lock-dir", default=None, metavar="DIR",
                   help="local directory of the per-machine timing lock (default: "
                        "$PRUNEBENCH_LOCK_DIR or the system temp dir)")
    p.add_argument("--heartbeat-interval", type=whole(1, DEFAULT_HEARTBEAT_S),
                   default=DEFAULT_HEARTBEAT_S, metavar="S",
                   help=f"seconds between heartbeats of a running trial (default "
                        f"{DEFAULT_HEARTBEAT_S})")
    p.add_argument("--grace-period", type=whole(2, 2 * DEFAULT_HEARTBEAT_S), default=None,
                   metavar="S",
                   help="seconds without heartbeat after which a trial counts as dead, is failed "
                        "and re-queued (default: twice the interval)")
    p.add_argument("--max-retry", type=whole(0, DEFAULT_MAX_RETRY), default=DEFAULT_MAX_RETRY,
                   metavar="N",
                   help=f"re-queue a dead trial at most N times (default {DEFAULT_MAX_RETRY})")
    p.add_argument("--db-outage-s", type=positive(DEFAULT_DB_OUTAGE_S),
                   default=DEFAULT_DB_OUTAGE_S, metavar="S",
                   help=f"wait up to S seconds for a database that went away (restart, "
                        f"failover), retrying, before giving up with exit code 2 (default "
                        f"{DEFAULT_DB_OUTAGE_S:g})")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print one JSON object when done")
    add_runtime_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run the worker; exit 0 when done, 130 when stopped by a signal."""
    from prunebench.search.workers import WorkerOptions, run_worker

    options = WorkerOptions(trials=args.trials, force=args.force, use_cache=not args.no_cache,
                            lock_dir=args.lock_dir, heartbeat_interval_s=args.heartbeat_interval,
                            grace_period_s=args.grace_period, max_retry=args.max_retry,
                            db_outage_s=args.db_outage_s, train_runtime=training_runtime(args))

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    # a lost database is worth its lines (on stderr) even with --quiet: run_worker's default
    result = run_worker(args.storage, args.study, options, progress=not args.quiet, log=log)
    summary = {"worker_id": result.worker_id, "trials": result.trials,
               "completed": result.completed, "failed": result.failed,
               "cache_hits": result.cache_hits, "stopped": result.stopped,
               "interrupted": result.interrupted}
    if args.json:
        print(json.dumps(summary))
    else:
        log(f"worker {result.worker_id}: {result.trials} trials ({result.completed} complete, "
            f"{result.failed} failed, {result.cache_hits} from cache); {result.stopped}")
    return 130 if result.interrupted else 0

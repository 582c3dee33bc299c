"""Orchestrate runs: which checks, how they run, how they are recorded.

Commands, views, the scheduler and tasks call these functions; they never
talk to twill or send mail themselves. One module per job:

- ``planning``: the checks the inventory implies, synced and selected;
- ``jobs``: a check's script rendered and validated into a runner ``Job``;
- ``recording``: results and state written in one transaction;
- ``running``: pools of workers, results in batches, leases renewed;
- ``claims``: the names for the claim queries on ``CheckQuerySet``;
- ``dispatch``: checks claimed and enqueued as Django Tasks, and the task's body;
- ``reports``: what a run reports to commands and APIs.
"""

from __future__ import annotations

from kong.engine.scripts import ScriptError
from kong.services.claims import claim_checks, claim_due, new_token, release_claims, renew_claims
from kong.services.dispatch import (
    EnqueueReport,
    enqueue_checks,
    fail_stale_tasks,
    here,
    run_claimed,
    stale_tasks,
)
from kong.services.jobs import Prepared, build_job, dry_run, invalid_outcome, masked_source, prepare
from kong.services.planning import (
    KongError,
    applicable_keys,
    explain_database_error,
    planned_checks,
    preview_checks,
    select_checks,
    sync_checks,
)
from kong.services.recording import record, record_many
from kong.services.reports import CheckReport, RunReport, report_for
from kong.services.running import LeaseKeeper, pool_options, run_check, run_checks

__all__ = [
    "CheckReport",
    "EnqueueReport",
    "KongError",
    "LeaseKeeper",
    "Prepared",
    "RunReport",
    "ScriptError",
    "applicable_keys",
    "build_job",
    "claim_checks",
    "claim_due",
    "dry_run",
    "enqueue_checks",
    "explain_database_error",
    "fail_stale_tasks",
    "here",
    "invalid_outcome",
    "masked_source",
    "new_token",
    "planned_checks",
    "pool_options",
    "prepare",
    "preview_checks",
    "record",
    "record_many",
    "release_claims",
    "renew_claims",
    "report_for",
    "run_check",
    "run_checks",
    "run_claimed",
    "select_checks",
    "stale_tasks",
    "sync_checks",
]

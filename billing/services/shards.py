"""
Shards: one reporting run shared by several django-q2 workers (on one machine or many).

A fanned-out run is a django-q2 group of tasks, one per shard of the customers (a
stable hash of the customer id, targets.Shard). Each shard is an ordinary run over its
customers, so every guarantee of a run holds per shard, and across shards too: the
ledger counts by customer and meter, and no customer is in two shards, so no period is
ever claimed by two of them; a shard that dies leaves pending rows that any later run
of the same shard (or a run over all customers) resends under the same identifiers.
The run's summary is assembled from its shards' results, which django-q2 stores with
the group (whichever broker carries the tasks: the database or Redis).
"""

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import uuid4

from django_q.models import Task
from django_q.tasks import async_task

from ..errors import BillingError
from .targets import Shard
from . import usage_reporting

logger = logging.getLogger(__name__)

GROUP_PREFIX = "report-usage-"
SHARD_TASK = "billing.tasks.report_usage_shard"
# A shard's result lists at most this many of its failed reports (their count is exact).
FAILED_LINES_KEPT = 100


def fan_out(*, trigger: str, shards: int) -> str:
    """Queue one task per shard of the customers; the django-q2 group id that holds them."""
    if shards < 1:
        raise BillingError(f"a run has at least one shard, not {shards}")
    group = f"{GROUP_PREFIX}{uuid4().hex[:12]}"
    for index in range(shards):
        async_task(SHARD_TASK, index, shards, trigger, group=group,
                   task_name=f"report usage, shard {index + 1} of {shards} ({group})")
    logger.info("reporting run %s fanned out to %d shard(s)", group, shards)
    return group


def run_shard(*, index: int, count: int, trigger: str) -> dict:
    """Report one shard's customers; its summary (counts, units, failed reports) as plain data."""
    result = usage_reporting.report_usage(trigger=trigger, shard=Shard(index, count), keep_outcomes=False)
    return {
        "shard": index, "of": count,
        "counts": dict(result.counts), "units_sent": str(result.units_sent),
        "failed": len(result.failed), "failed_lines": [o.line() for o in result.failed[:FAILED_LINES_KEPT]],
    }


@dataclass
class ShardedRun:
    """A fanned-out run as its shards have reported so far."""

    group: str
    shards: int
    run: usage_reporting.RunResult = field(default_factory=lambda: usage_reporting.RunResult(keep=False))
    done: set = field(default_factory=set)
    failed_lines: list[str] = field(default_factory=list)
    failed_count: int = 0
    # Shards whose task raised (django-q2 keeps the error as the task's result).
    crashed: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return len(self.done) + len(self.crashed) >= self.shards

    def summary(self) -> str:
        text = f"{self.run.summary()} ({len(self.done)} of {self.shards} shard(s) finished"
        text += f", {len(self.crashed)} crashed)" if self.crashed else ")"
        return text


def assembled(group: str, *, shards: int) -> ShardedRun:
    """The run `group` as django-q2 holds its shards' results now."""
    run = ShardedRun(group=group, shards=shards)
    for task in Task.objects.filter(group=group).order_by("started"):
        if not task.success or not isinstance(task.result, dict):
            run.crashed.append(f"{task.name}: {task.result}")
            continue
        result = task.result
        run.done.add(result["shard"])
        run.run.counts.update(result["counts"])
        run.run.units_sent += Decimal(result["units_sent"])
        run.failed_count += result["failed"]
        run.failed_lines += result["failed_lines"]
    return run


def fan_out_and_wait(*, trigger: str, shards: int, wait: float) -> ShardedRun:
    """Fan a run out and wait up to `wait` seconds for its shards (the command's --shards)."""
    group = fan_out(trigger=trigger, shards=shards)
    deadline = time.monotonic() + wait
    while True:
        run = assembled(group, shards=shards)
        if run.finished or time.monotonic() > deadline:
            return run
        time.sleep(0.5)

"""The run id of a schedule tick: ``monthly-YYYY-MM``, the one the workflow gives the same tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dsjob.errors import ConfigError

#: The id's form. infra/dsjob_infra/workflow.py builds the same one with
#: ``States.Format('monthly-{}-{}', ...)`` from the first two ``-`` fields of the
#: tick, and the stack's settings refuse a schedule that fires twice in a month;
#: tests/infra/test_workflow_emulated.py holds the two equal.
RUN_ID_FORMAT = "monthly-%Y-%m"


def tick_run_id(scheduled_time: str) -> str:
    """The run id of a schedule tick: ``monthly-YYYY-MM`` of the tick.

    Every delivery of one tick (EventBridge Scheduler delivers at least once) gets
    the same id, so the second one finds the first one's manifest and publishes
    nothing. The tick must be in UTC, as ``<aws.scheduler.scheduled-time>`` is
    (``2027-01-15T09:00:00Z``; EventBridge Scheduler User Guide, "Context
    attributes"): the workflow reads the year and month as written, so a tick with
    another offset could name a different month there than here. A tick with no
    offset is taken as UTC.
    """
    try:
        tick = datetime.fromisoformat(scheduled_time.strip())
    except ValueError as exc:
        msg = f"scheduled-time must be an ISO 8601 time, got {scheduled_time!r}"
        raise ConfigError(msg) from exc
    if tick.utcoffset() not in (None, timedelta(0)):
        msg = (
            f"scheduled-time must be in UTC (as the schedule passes it: "
            f"2027-01-15T09:00:00Z), got {scheduled_time!r}"
        )
        raise ConfigError(msg)
    return tick.replace(tzinfo=UTC).strftime(RUN_ID_FORMAT)

"""The run id of a schedule tick."""

from __future__ import annotations

from datetime import UTC, datetime

from dsjob.errors import ConfigError


def tick_run_id(scheduled_time: str) -> str:
    """The run id of a schedule tick: ``scheduled-YYYYMMDDTHHMMSSZ`` of the tick in UTC.

    Every delivery of one tick (EventBridge Scheduler delivers at least once) gets
    the same id, so the second one finds the first one's manifest and publishes
    nothing. The id does not depend on the cadence: a monthly tick on 1 January
    2027 is ``scheduled-20270101T000000Z``.
    """
    try:
        tick = datetime.fromisoformat(scheduled_time.strip())
    except ValueError as exc:
        msg = f"scheduled-time must be an ISO 8601 time, got {scheduled_time!r}"
        raise ConfigError(msg) from exc
    if tick.tzinfo is None:
        tick = tick.replace(tzinfo=UTC)  # the scheduler's <aws.scheduler.scheduled-time> is UTC
    return tick.astimezone(UTC).strftime("scheduled-%Y%m%dT%H%M%SZ")

"""When an ask may go out: pure time arithmetic (no database), in the workspace's time zone."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def in_quiet_hours(local: time, start: time | None, end: time | None) -> bool:
    if start is None or end is None or start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end  # the quiet hours span midnight (e.g. 21:00 to 08:00)


def next_allowed_time(at: datetime, *, quiet_start: time | None, quiet_end: time | None, tz: ZoneInfo) -> datetime:
    """``at``, or the end of the quiet hours it falls in (local wall-clock time of ``tz``)."""
    local = at.astimezone(tz)
    if not in_quiet_hours(local.time(), quiet_start, quiet_end):
        return at
    assert quiet_start is not None and quiet_end is not None
    day = local.date()
    if quiet_start > quiet_end and local.time() >= quiet_start:
        day += timedelta(days=1)
    return datetime.combine(day, quiet_end, tzinfo=tz)


def local_day_bounds(at: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The start of ``at``'s local day and of the next one."""
    day = at.astimezone(tz).date()
    start = datetime.combine(day, time(0), tzinfo=tz)
    return start, datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)

"""Quota periods: UTC calendar days and months."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta


def day_start(now: datetime) -> date:
    return now.astimezone(UTC).date()


def month_start(now: datetime) -> date:
    return day_start(now).replace(day=1)


def next_day(start: date) -> datetime:
    return datetime.combine(start + timedelta(days=1), time(), tzinfo=UTC)


def next_month(start: date) -> datetime:
    first = start.replace(day=1)
    year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)

"""Business hours: when the sales desk answers, as weekdays and one daily window in one
time zone (``ESOTERIC_BUSINESS_HOURS=Mon-Fri 09:30-18:00``, ``ESOTERIC_BUSINESS_TIMEZONE``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import get_day_names

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(
    r"^\s*(?P<d1>[a-z]{3})(?:\s*-\s*(?P<d2>[a-z]{3}))?\s+"
    r"(?P<h1>\d{1,2}):(?P<m1>\d{2})\s*-\s*(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class BusinessHours:
    """When reps are at their desks: some weekdays, one daily window, in one time zone."""

    days: frozenset[int]  # 0 = Monday
    start: time
    end: time
    tz: ZoneInfo

    @classmethod
    def parse(cls, spec: str, timezone: str = "UTC") -> BusinessHours:
        """``Mon-Fri 09:30-18:00`` (or ``Sat 10:00-14:00``) in ``timezone``; ``ValueError``
        says what is wrong."""
        match = _HOURS.match(spec)
        if not match:
            raise ValueError(f"{spec!r} is not like 'Mon-Fri 09:30-18:00'")
        d1, d2 = match.group("d1").lower(), (match.group("d2") or match.group("d1")).lower()
        if d1 not in _DAYS or d2 not in _DAYS:
            raise ValueError(f"unknown day in {spec!r}; use Mon, Tue, Wed, Thu, Fri, Sat, Sun")
        first, last = _DAYS.index(d1), _DAYS.index(d2)
        days = frozenset((first + i) % 7 for i in range((last - first) % 7 + 1))
        try:
            start = time(int(match.group("h1")), int(match.group("m1")))
            end = time(int(match.group("h2")), int(match.group("m2")))
        except ValueError:
            raise ValueError(f"bad time of day in {spec!r}") from None
        if end <= start:
            raise ValueError(f"the window in {spec!r} must end after it starts")
        try:
            tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        return cls(days, start, end, tz)

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(self.tz)
        return local.weekday() in self.days and self.start <= local.time() < self.end

    def next_open(self, at: datetime) -> datetime:
        """``at`` itself when open, else the next opening time (timezone-aware)."""
        if self.is_open(at):
            return at
        local = at.astimezone(self.tz)
        for ahead in range(8):
            day = local.date() + timedelta(days=ahead)
            opening = datetime.combine(day, self.start, tzinfo=self.tz)
            if day.weekday() in self.days and opening > local:
                return opening
        raise AssertionError("business hours have at least one day")

    def describe(self, locale: str | None = None) -> str:
        """``Mon-Fri 09:30-18:00 (Asia/Kolkata)``; day names in a Babel ``locale`` if given."""
        days = sorted(self.days)
        if locale is None:
            names = [_DAYS[d].title() for d in days]
        else:
            local_names = get_day_names("abbreviated", locale=locale)
            names = [str(local_names[d]) for d in days]
        span = names[0] if len(names) == 1 else f"{names[0]}-{names[-1]}"
        return f"{span} {self.start:%H:%M}-{self.end:%H:%M} ({self.tz.key})"

"""The rules of a TripClick record that more than one module applies, stated once
(spec: tripclick-format.md; "Identity: the dedup key" is in `tripflow.records.dedup`).

Time: event times are epoch milliseconds (UTC); a click's date is the UTC day of its
event time, `ms // ONE_DAY_MS` days after 1970-01-01 (floor division: right for every
ms value). A click is plausible from 2000-01-01 (`EARLIEST_EVENT_MS`) to one day after
the time it was read (`FUTURE_TOLERANCE_MS`); the parser quarantines anything else as
`too_old` / `in_future`.

DateCreated: `/Date(<decimal epoch ms>)/`; in the raw JSON the slashes may be escaped
(`\\/Date(…)\\/`). The parser reads the JSON value (`DATE_CREATED_VALUE`); modules that
look for it in raw bytes without parsing use `DATE_CREATED_RAW` after the key.
"""

from __future__ import annotations

import datetime as dt

# -- time units ----------------------------------------------------------------------------
MS_PER_SECOND = 1_000
MS_PER_MINUTE = 60 * MS_PER_SECOND
MS_PER_HOUR = 60 * MS_PER_MINUTE
ONE_DAY_MS = 24 * MS_PER_HOUR  # 86_400_000
UNIX_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()  # date.fromordinal(day + this)

# -- plausible event times -----------------------------------------------------------------
EARLIEST_EVENT_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
FUTURE_TOLERANCE_MS = ONE_DAY_MS  # an event may be up to a day after its read time


def event_day(event_ms: int) -> int:
    """Days since 1970-01-01 of an event time (its UTC date)."""
    return event_ms // ONE_DAY_MS


def event_date(event_ms: int) -> dt.date:
    """The UTC date of an event time."""
    return dt.date.fromordinal(event_day(event_ms) + UNIX_EPOCH_ORDINAL)


def plausible(event_ms: int, read_ms: int) -> bool:
    """True when the parser accepts this event time for a record read at `read_ms`."""
    return event_ms >= EARLIEST_EVENT_MS and event_ms - FUTURE_TOLERANCE_MS <= read_ms


# -- DateCreated ---------------------------------------------------------------------------
# The JSON string value (unescaped), as the parser matches it; group 1: the ms digits.
DATE_CREATED_VALUE = r"^/Date\(([0-9]+)\)/$"
DATE_CREATED_PREFIX, DATE_CREATED_SUFFIX = "/Date(", ")/"
# The key and its value in raw JSON bytes (slashes optionally escaped); group `ms`: the
# digits (18 always fit an int64).
DATE_CREATED_KEY = r'"DateCreated"\s*:\s*"'
DATE_CREATED_RAW = r'\\?/Date\((?P<ms>[0-9]{1,18})\)\\?/"'

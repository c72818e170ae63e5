"""The interval channels' complete days: each day's 24 hours of ``hourly_series`` summed, a month a row.

Theft ranking needs a daily series for every meter. A meter with an interval channel and no
register (a smart meter reporting load profiles only) has none in ``daily_series``: that holds an
interval channel's sum over the intervals *stamped* in a UTC day, whatever their number, where the
analytics take the hours each interval *covers* and only whole days (a day missing any hour is no
day total). So the loader read every such meter's month rows of ``hourly_series`` (31 × 24 float8,
≈ 6 kB a row: ≈ 7 GB at 100,000 meters × 365 days) to add up their days, and the ranking read
them all again for the hours.

``interval_day_series`` keeps those day totals, laid out as ``daily_series`` is: one row per meter,
interval channel and UTC month, ``value`` a ``bytea`` of 31 big-endian ``float8`` (day ``d`` at bytes
``8(d − 1)`` …), the day's 24 hour sums of ``hourly_series`` added in hour order
(``h0 + h1 + … + h23``), NaN when any hour has no interval, for days without any and past the
month's end. Added in that order, as :func:`releve.arrays.sum_in_order` adds them, the figure is
the one the loader computed from the hours, to the bit (248 bytes a row: ≈ 300 MB at 100,000 × 365).

``refresh_hourly_series`` (0029, reading through ``reading_between`` since 0030) computes the total
beside each fresh day's hours and lays it into this table's month rows in the same statement, over
the same days, so the two never disagree. The upgrade sums the hours already there (no pass over
``reading``).
"""

from __future__ import annotations

import numpy as np
from psycopg import Connection

from releve.arrays import sum_in_order
from releve.migrate import MigrationContext, earlier
from releve.pgbinary import HEADER, TRAILER, copy_blocks, new_rows, row_dtype

_M29 = earlier("0029_hourly_months")
_M30 = earlier("0030_reading_blocks")
DAYS: int = _M29.DAYS
HOURS: int = _M29.HOURS

TABLE = f"""
CREATE TABLE interval_day_series (
    meter_id    integer NOT NULL,
    channel_id  smallint NOT NULL,
    month       date NOT NULL CHECK (extract(day FROM month) = 1),
    value       bytea NOT NULL CHECK (length(value) = {DAYS} * 8),
    PRIMARY KEY (meter_id, channel_id, month)
);
COMMENT ON TABLE interval_day_series IS
    'Per meter, interval channel and UTC month: 31 big-endian float8, day d''s 24 hours of hourly_series '
    'added in hour order (NaN: a day missing any hour). Kept by refresh_hourly_series with hourly_series.';
"""

#: The day's total beside its hours in the refresh's ``fresh`` rows: its 24 hour sums (NaN for an
#: hour without an interval, as ``hours`` has them) added left to right, as ``sum_in_order`` adds.
_TOTAL = "\n               + ".join(
    f"coalesce(sum(i.value) FILTER (WHERE i.hour % 24 = {k}), 'NaN')" for k in range(HOURS)
)

#: The month rows of ``interval_day_series`` laid from the same ``days`` rows as ``hourly_series``'s:
#: each day's total after the NaNs of the days without one since the previous day of its month, the
#: days of ``[lo, hi)`` of a row already there replaced, its other days kept (as 0029 lays the texture).
_LAY_TOTALS = f"""
    RETURNING 1)
    INSERT INTO interval_day_series AS s (meter_id, channel_id, month, value)
    SELECT meter_id, channel_id, month,
           string_agg(substring(nan FROM 1 FOR 8 * gap) || float8send(total), ''::bytea ORDER BY day)
               || substring(nan FROM 1 FOR 8 * ({DAYS} - max(dom)))
    FROM days
    GROUP BY meter_id, channel_id, month
    ON CONFLICT (meter_id, channel_id, month) DO UPDATE
    SET value = substring(s.value FROM 1 FOR 8 * greatest(lo - s.month, 0))
                || substring(EXCLUDED.value FROM 8 * greatest(lo - s.month, 0) + 1
                             FOR 8 * (least(hi - s.month, {DAYS}) - greatest(lo - s.month, 0)))
                || substring(s.value FROM 8 * least(hi - s.month, {DAYS}) + 1);
    GET DIAGNOSTICS rows = ROW_COUNT;"""


def refresh() -> str:
    """``refresh_hourly_series`` as 0030 left it, laying each fresh day's total into this table too."""
    (current,) = [s for s in _M30.readers_of_earlier_migrations(False) if "refresh_hourly_series" in s]
    return _M30._replaced(
        current,
        (" AS hours,\n", f" AS hours,\n               {_TOTAL} AS total,\n"),
        ("f.day, f.hours, f.texture,", "f.day, f.hours, f.total, f.texture,"),
        (" t)\n    INSERT INTO hourly_series AS s", " t),\n    laid AS (\n    INSERT INTO hourly_series AS s"),
        (";\n    GET DIAGNOSTICS rows = ROW_COUNT;", _LAY_TOTALS),
    )


#: One row of each table in a binary COPY: the hours read, the totals written.
_HOURS_ROW = row_dtype(("meter_id", ">i4"), ("channel_id", ">i2"), ("month", ">i4"), ("value", f"({DAYS}, {HOURS})>f8"))
_TOTALS_ROW = row_dtype(("meter_id", ">i4"), ("channel_id", ">i2"), ("month", ">i4"), ("value", f"({DAYS},)>f8"))


def _totals_rows(hours: np.ndarray) -> np.ndarray:
    """The ``interval_day_series`` COPY rows of some ``hourly_series`` rows."""
    out = new_rows(_TOTALS_ROW, len(hours))
    for name in ("meter_id", "channel_id", "month"):
        out[name] = hours[name]
    out["value"] = sum_in_order(hours["value"].astype(np.float64))
    return out


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the table, fill it from the hourly series there, and have the refresh keep it."""
    del ctx  # the same on the TimescaleDB path (a table and a function)
    conn.execute(TABLE.encode())
    fill(conn)
    conn.execute(refresh().encode())


def fill(conn: Connection) -> None:
    """Write the day totals of every ``hourly_series`` row (into an empty ``interval_day_series``)."""
    blocks = copy_blocks(
        conn,
        "COPY (SELECT meter_id, channel_id, month, value FROM hourly_series) TO STDOUT (FORMAT binary)",
        None,
        _HOURS_ROW,
        block_rows=4096,
    )
    # Read whole before the rows go back in: one connection cannot COPY out and in at once. A
    # block's totals are 1/24 of its hours (≈ 300 MB at 100,000 meters × 365 days in all).
    parts = [_totals_rows(block) for block in blocks]
    with conn.cursor().copy(
        "COPY interval_day_series (meter_id, channel_id, month, value) FROM STDIN (FORMAT binary)"
    ) as cp:
        cp.write(HEADER)
        for part in parts:
            cp.write(part.tobytes())
        cp.write(TRAILER)

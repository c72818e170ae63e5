"""The row-fetch database load that ``releve theft rank`` used before the columnar one, kept as a baseline.

Verbatim from ``analytics/theft/store.py`` before issue 18: every daily and hourly row fetched into
Python tuples, and with interval data a meters × days × 24 array for the whole fleet (7 GB at
100,000 meters × 365 days). ``bench/theft_db.py`` times it beside the current path.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import psycopg

from analytics.theft.data import Event, TheftData, register_advance
from analytics.theft.signals import FloatArray, longest_true_run
from analytics.theft.store import EXPORT_CHANNELS, IMPORT_CHANNELS, INDEX_RULES, INTERVAL_CHANNELS, StoreError, _period


def _last_per_day(
    conn: psycopg.Connection, codes: tuple[str, ...], lo: datetime, hi: datetime
) -> list[tuple[int, date, float]]:
    """The last register value of each day: the daily aggregate, corrected where VEE made a version.

    Reading the daily aggregate keeps this one row per meter and day however often meters are read;
    the few (meter, day) pairs that carry an estimate or edit are read from ``validated_reading``.
    """
    rows = conn.execute(
        """SELECT d.meter_id, (d.day AT TIME ZONE 'UTC')::date, d.last_value
           FROM daily_reading d JOIN channel c ON c.id = d.channel_id
           WHERE c.code = ANY(%s) AND d.day >= %s AND d.day < %s""",
        (list(codes), lo, hi),
    ).fetchall()
    edited = conn.execute(
        """WITH touched AS (
               SELECT DISTINCT v.meter_id, v.channel_id, date_trunc('day', v.ts AT TIME ZONE 'UTC') AS day
               FROM reading_version v JOIN channel c ON c.id = v.channel_id
               WHERE c.code = ANY(%s) AND v.ts >= %s AND v.ts < %s)
           SELECT DISTINCT ON (t.meter_id, t.day) t.meter_id, t.day::date, coalesce(v.value, r.value)
           FROM touched t
           JOIN reading_all r ON r.meter_id = t.meter_id AND r.channel_id = t.channel_id
                         AND r.ts >= t.day AT TIME ZONE 'UTC' AND r.ts < (t.day + interval '1 day') AT TIME ZONE 'UTC'
           LEFT JOIN LATERAL (SELECT rv.value FROM reading_version rv
                              WHERE rv.meter_id = r.meter_id AND rv.channel_id = r.channel_id AND rv.ts = r.ts
                                AND rv.kind <> 'adjustment' ORDER BY rv.version DESC LIMIT 1) v ON true
           WHERE coalesce(v.value, r.value) IS NOT NULL
           ORDER BY t.meter_id, t.day, r.ts DESC""",
        (list(codes), lo, hi),
    ).fetchall()
    if not edited:
        return rows
    fixed = {(m, d): v for m, d, v in edited}
    return [(m, d, fixed.pop((m, d), v)) for m, d, v in rows] + [(m, d, v) for (m, d), v in fixed.items()]


def load_from_database(
    conn: psycopg.Connection, start: date | None = None, end: date | None = None, days: int = 365
) -> TheftData:
    """Build :class:`TheftData` for ``[start, end)``.

    Default period: the last ``days`` days up to the last reading, not before the first reading.
    """
    start, end = _period(conn, start, end, days)
    n_days = (end - start).days
    lo = datetime(start.year, start.month, start.day, tzinfo=UTC)
    hi = datetime(end.year, end.month, end.day, tzinfo=UTC)
    meters = conn.execute(
        """SELECT m.id, m.serial, m.commodity, m.unit, m.import_only,
                   coalesce(m.register_wrap, power(10, m.register_digits)::double precision),
                   sp.customer_class, coalesce(a.code, ''), sp.latitude, sp.longitude
            FROM meter m
            LEFT JOIN LATERAL (SELECT service_point_id FROM installation i WHERE i.meter_id = m.id
                               ORDER BY installed_at DESC LIMIT 1) inst ON true
            LEFT JOIN service_point sp ON sp.id = inst.service_point_id
            LEFT JOIN area a ON a.id = sp.area_id
            WHERE m.id NOT IN (SELECT feeder_meter_id FROM area WHERE feeder_meter_id IS NOT NULL)
            ORDER BY m.serial"""
    ).fetchall()
    if not meters:
        raise StoreError("no customer meters in the database")
    row_of = {r[0]: k for k, r in enumerate(meters)}
    feeders = conn.execute(
        "SELECT a.code, a.feeder_meter_id, a.technical_loss_pct FROM area a WHERE a.feeder_meter_id IS NOT NULL"
    ).fetchall()
    feeder_row = {f[1]: k for k, f in enumerate(feeders)}
    m = len(meters)

    def grid(rows: list[tuple[int, date, float]], index: dict[int, int], size: int) -> FloatArray:
        out = np.full((size, n_days), np.nan)
        for mid, day, value in rows:
            k = index.get(mid)
            j = (day - start).days
            if k is not None and 0 <= j < n_days:
                out[k, j] = value
        return out

    imp_rows = _last_per_day(conn, IMPORT_CHANNELS, lo, hi)
    daily = register_advance(grid(imp_rows, row_of, m))
    export = register_advance(grid(_last_per_day(conn, EXPORT_CHANNELS, lo, hi), row_of, m))
    feeder_daily = register_advance(grid(imp_rows, feeder_row, len(feeders)))

    # Hourly profiles from the raw intervals (stamped at their end): the shape of a day, not billing
    # figures, so estimates filling the odd gap do not matter and the view's version merge is skipped.
    interval = conn.execute(
        """SELECT r.meter_id, (s.t AT TIME ZONE 'UTC')::date, extract(hour FROM s.t AT TIME ZONE 'UTC')::int,
                  sum(r.value)
           FROM reading_all r JOIN channel c ON c.id = r.channel_id
           CROSS JOIN LATERAL (SELECT r.ts - make_interval(secs => coalesce(c.interval_s, 900)) AS t) s
           WHERE c.code = ANY(%s) AND r.ts > %s AND r.ts <= %s
           GROUP BY 1, 2, 3""",
        (list(INTERVAL_CHANNELS), lo, hi),
    ).fetchall()
    hourly = None
    feeder_hourly: dict[int, FloatArray] = {}
    if interval:
        hourly = np.full((m, n_days, 24), np.nan)
        seen = np.zeros((m, n_days, 24), dtype=bool)
        for mid, day, hour, value in interval:
            k = row_of.get(mid)
            j = (day - start).days
            if k is not None and 0 <= j < n_days:
                hourly[k, j, hour] = value
                seen[k, j, hour] = True
        day_sum = np.where(seen.all(axis=2), np.nansum(hourly, axis=2), np.nan)
        no_register = ~np.isfinite(daily).any(axis=1)
        daily[no_register] = day_sum[no_register]
        hourly[~seen.all(axis=2)] = np.nan
        # Feeders with an interval channel: hourly totals (the interval balance), and their daily
        # sums when they have no register at all.
        f_hourly = np.zeros((len(feeders), n_days, 24))
        f_seen = np.zeros((len(feeders), n_days, 24), dtype=bool)
        for mid, day, hour, value in interval:
            k = feeder_row.get(mid)
            j = (day - start).days
            if k is not None and 0 <= j < n_days:
                f_hourly[k, j, hour] = value
                f_seen[k, j, hour] = True
        f_full = np.asarray(f_seen.all(axis=2), dtype=bool)
        for k in range(len(feeders)):
            if f_full[k].sum() >= 7:
                feeder_hourly[k] = np.where(f_full[k][:, None], f_hourly[k], np.nan)
                if not np.isfinite(feeder_daily[k]).any():
                    feeder_daily[k] = np.where(f_full[k], f_hourly[k].sum(axis=1), np.nan)

    data = TheftData(
        serials=[r[1] for r in meters],
        first_day=start,
        daily=daily,
        commodity=np.array([r[2] for r in meters], dtype=object),
        customer_class=np.array([r[6] or "unknown" for r in meters], dtype=object),
        area=np.array([r[7] for r in meters], dtype=object),
        latitude=np.array([np.nan if r[8] is None else r[8] for r in meters], dtype=float),
        longitude=np.array([np.nan if r[9] is None else r[9] for r in meters], dtype=float),
        import_only=np.array([bool(r[4]) for r in meters]),
        wrap=np.array([np.inf if r[5] is None else float(r[5]) for r in meters]),
        cumulative=bool(imp_rows),
        export=export,
        hourly=hourly,
        unit=np.array([r[3] for r in meters], dtype=object),
        meter_ids=[r[0] for r in meters],
    )
    for k, (code, _, pct) in enumerate(feeders):
        data.feeders[code] = feeder_daily[k]
        if k in feeder_hourly:
            data.feeders_hourly[code] = feeder_hourly[k]
        if pct is not None and float(pct) > 0:
            data.technical_loss_pct[code] = float(pct)
    for mid, ts, kind, code in conn.execute(
        "SELECT meter_id, ts, kind, code FROM meter_event WHERE ts >= %s AND ts < %s ORDER BY ts", (lo, hi)
    ):
        k = row_of.get(mid)
        if k is not None:
            data.events.append(Event(k, (ts.astimezone(UTC).date() - start).days, ts, kind, code))
    vee = np.zeros(m)
    streak_mask = np.zeros((m, n_days), dtype=bool)
    if conn.execute("SELECT to_regclass('vee_exception') IS NOT NULL").fetchone() == (True,):
        for mid, n in conn.execute(
            """SELECT meter_id, count(*) FROM vee_exception WHERE rule = ANY(%s) AND status <> 'rejected'
               AND ts >= %s AND ts < %s GROUP BY 1""",
            (list(INDEX_RULES), lo, hi),
        ):
            if mid in row_of:
                vee[row_of[mid]] = n
        for mid, day in conn.execute(
            """SELECT DISTINCT meter_id, (ts AT TIME ZONE 'UTC')::date FROM reading_version
               WHERE kind = 'estimate' AND ts >= %s AND ts < %s""",
            (lo, hi),
        ):
            k = row_of.get(mid)
            if k is not None:
                streak_mask[k, (day - start).days] = True
    data.vee_exceptions = vee
    data.estimate_streak = longest_true_run(streak_mask)
    return data

"""Interval reading: time-of-use consumption and maximum demand from the validated interval series."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

from psycopg import Connection

from billing.components import TOU
from billing.draft import Draft
from billing.pricing import allocate, q, tou_period
from billing.tariffs import TariffBook
from releve.model import INTERVAL_CHANNEL


def read_intervals(conn: Connection, book: TariffBook, drafts: list[Draft]) -> None:
    """Time-of-use consumption and maximum demand from the validated interval series."""
    dets = [x for d in drafts for x in d.dets]
    keys = [x.key for x in dets]
    if not keys:
        return
    tz = book.rules.timezone
    per: dict[int, list[tuple[date, int, int, float, float]]] = defaultdict(list)
    interval_s: dict[int, int] = {}
    # Intervals are stamped at their END: the interval stamped T covers (T - length, T]. It belongs to
    # the determinant whose window holds that span (lo < T <= hi), to the tariff segment of the UTC day
    # its span starts on, and to the TOU period of the local weekday and hour its span starts in.
    for k, day, dow, hour, total, peak, ivl in conn.execute(
        """SELECT s.key, (b.began AT TIME ZONE 'UTC')::date, extract(isodow FROM b.began AT TIME ZONE %(tz)s)::int,
                  extract(hour FROM b.began AT TIME ZONE %(tz)s)::int, sum(v.value), max(v.value), max(c.interval_s)
           FROM unnest(%(keys)s::integer[], %(meters)s::integer[], %(los)s::timestamptz[], %(his)s::timestamptz[])
                AS s(key, meter_id, lo, hi)
           JOIN validated_between(%(lo)s, %(hi)s) v ON v.meter_id = s.meter_id AND v.ts > s.lo AND v.ts <= s.hi
           JOIN channel c ON c.id = v.channel_id AND c.code = ANY(%(ch)s)
           CROSS JOIN LATERAL (SELECT v.ts - make_interval(secs => coalesce(c.interval_s, 900)) AS began) b
           WHERE v.value IS NOT NULL
           GROUP BY 1, 2, 3, 4""",
        {
            "tz": tz,
            "ch": list(INTERVAL_CHANNEL.values()),
            "keys": keys,
            "meters": [x.meter_id for x in dets],
            "los": [x.start_at for x in dets],
            "his": [x.end_at for x in dets],
            # The run's whole window, for validated_between: it reaches only these days' partitions.
            "lo": min(x.start_at for x in dets),
            "hi": max(x.end_at for x in dets),
        },
    ):
        per[k].append((day, dow, hour, float(total), float(peak)))
        interval_s[k] = int(ivl or 900)
    qd = book.rules.quantity_decimals
    for d in drafts:
        raw: dict[tuple[int, str], float] = {}
        peak_kw: Decimal | None = None
        missing = False
        for x in d.dets:
            rows = per.get(x.key)
            if not rows:
                missing = True
                continue
            kw = Decimal(repr(max(r[4] for r in rows) * 3600 / interval_s[x.key])) * x.multiplier
            x.max_demand = q(kw, qd)
            peak_kw = x.max_demand if peak_kw is None else max(peak_kw, x.max_demand)
            mine: dict[str, float] = {}
            for day, dow, hour, total, _ in rows:
                for k, (t, lo, hi) in enumerate(d.segments):
                    if lo <= day < hi and t.uses(TOU):
                        name = tou_period(t, dow, hour)
                        raw[(k, name)] = raw.get((k, name), 0.0) + total * float(x.multiplier)
                        mine[name] = mine.get(name, 0.0) + total * float(x.multiplier)
            # the meter's own interval sums per period (unscaled), kept with its determinant
            x.tou = {name: q(Decimal(repr(v)), qd) for name, v in mine.items()}
        if missing:
            d.holds.append("intervals: the tariff needs interval data (time of use or demand) and some is missing")
            continue
        d.details["max_demand"] = str(peak_kw)
        order = [(k, p.name) for k, (t, _, _) in enumerate(d.segments) for p in t.part(TOU).tou]
        if order:
            weights = [round(raw.get(o, 0.0) * 1_000_000) for o in order]
            shares = allocate(d.consumption, weights if sum(weights) else [1] * len(order), qd)
            d.details["tou"] = [{} for _ in d.segments]
            for (k, name), share in zip(order, shares, strict=True):
                d.details["tou"][k][name] = share

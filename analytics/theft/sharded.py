"""Theft ranking when ``reading`` is sharded by meter (docs/scaling.md, sharding by meter).

Areas straddle shards: ``reading`` is hashed by meter, so a transformer's or DMA's customers and its
feeder / bulk meter sit on different shards. Rather than re-hash by area (which would move the
distribution key off the meter, and with it ingest routing, VEE and billing), the ranking **gathers
per-meter inputs from the shards**:

1. every shard's daily aggregate is refreshed (all at once) and the period is fixed once for all
   shards, by the rule of ``store.load_from_database`` (the last ``days`` days up to the last
   complete day) over every shard's daily aggregate;
2. on every shard at once, one thread each, ``store.load_from_database`` builds the meters × days
   inputs (daily consumption, export, hourly profiles, events, VEE exceptions, estimate streaks) and
   the feeders' daily series: the heavy part, reading the series, runs where the series are;
3. the coordinator merges the shards' inputs into one fleet: each meter's row from its home shard
   (every shard holds the whole registry, so lists every meter), in the order one server gives them
   (by serial, in the database's collation), each area's feeder series from the shard holding
   its feeder meter, so every area's energy balance sees all of its customers;
4. the merged fleet is scored once, with the inspection outcomes kept on the coordinator as labels,
   and the run is stored on the coordinator.

Scoring once, not per shard, is what makes the ranking the one of a single server: peer groups, the
isolation forest and the model trained on outcomes are fleet-wide. The inputs are small (a float per
meter and day, 24 per meter and day for the profiles) beside the readings they come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, timedelta
from typing import Any

import numpy as np

from analytics.theft import DEFAULT_DAYS, DEFAULT_KEEP, DEFAULT_ORDER, store
from analytics.theft.data import Event, TheftData
from analytics.theft.features import Progress
from releve import shards
from releve.db import connect, editor_role, reader_role, refresh_daily, refresh_hourly
from releve.settings import Settings


def period(
    settings: Settings, shard_urls: Sequence[str], start: date | None, end: date | None, days: int
) -> tuple[date, date]:
    """Days ``[start, end)`` as ``store.load_from_database`` would choose them on one server with all shards' data."""
    spans = []
    for url in shard_urls:
        with connect(url, role=reader_role(settings)) as conn:
            row = conn.execute("SELECT min(day), max(day) FROM daily_reading").fetchone()
        if row is not None and row[0] is not None:
            spans.append((row[0], row[1]))
    if not spans:
        raise store.StoreError("no readings on any shard")
    first, last_day = min(s[0] for s in spans), max(s[1] for s in spans)
    if end is None:
        last = last_day.astimezone(UTC).date()
        end = last + timedelta(days=1)
        # as on one server: a last day with fewer readings than the day before is partial, left out
        n_last = n_before = 0
        for url in shard_urls:
            with connect(url, role=reader_role(settings)) as conn:
                row = conn.execute(
                    """SELECT coalesce(sum(n) FILTER (WHERE day = %s), 0), coalesce(sum(n) FILTER (WHERE day = %s), 0)
                       FROM daily_reading WHERE day >= %s""",
                    (last_day, last_day - timedelta(days=1), last_day - timedelta(days=1)),
                ).fetchone()
            if row is not None:
                n_last, n_before = n_last + int(row[0]), n_before + int(row[1])
        if n_before > 0 and n_last < 0.9 * n_before and last > first.astimezone(UTC).date():
            end = last
    if start is None:
        start = max(end - timedelta(days=days), first.astimezone(UTC).date())
    if end <= start:
        raise store.StoreError(f"empty period {start} … {end}")
    return start, end


def _load_shard(settings: Settings, url: str, start: date, end: date) -> TheftData | None:
    """One shard's inputs for ``[start, end)`` (None when the shard holds no customer meter)."""
    with connect(url, role=reader_role(settings)) as conn:
        try:
            # whole hourly arrays: the connection closes before the merge (no area-by-area reads across shards)
            return store.load_from_database(conn, start, end, hourly_in_memory=1 << 62)
        except store.StoreError:
            return None


def merge(parts: Sequence[TheftData | None], home: dict[str, int], order: Sequence[str]) -> TheftData:
    """One fleet from the shards' inputs (``parts[k]`` from shard ``k``), meters in ``order``.

    Every shard holds the whole registry, so each part lists every customer meter; a meter's row is
    taken from its ``home`` shard, the one holding its readings. ``order`` is the serials as one
    server orders them.
    """
    rows = [
        [i for i, s in enumerate(p.serials) if home.get(s) == k] if p is not None else [] for k, p in enumerate(parts)
    ]
    got = [(p, r) for p, r in zip(parts, rows, strict=True) if p is not None]
    if not got or not any(r for _, r in got):
        raise store.StoreError("no customer meters on any shard")
    rank = {s: k for k, s in enumerate(order)}
    serials = [p.serials[i] for p, r in got for i in r]
    perm = np.array(sorted(range(len(serials)), key=lambda i: (rank.get(serials[i], len(rank)), serials[i])), int)
    where = np.empty(len(perm), int)
    where[perm] = np.arange(len(perm))
    first = got[0][0]
    n_days = first.n_days

    def cat(get: Any, fill: Any = None) -> Any:
        """A per-meter array of every part (``fill`` where a part has none), home rows only, in merged order."""
        pieces = []
        for p, r in got:
            value = get(p)
            pieces.append((value if value is not None else fill(p))[np.array(r, int)])
        return np.concatenate(pieces)[perm]

    any_hourly = any(p.hourly is not None for p, _ in got)
    data = TheftData(
        serials=[serials[i] for i in perm],
        first_day=first.first_day,
        daily=cat(lambda p: p.daily),
        commodity=cat(lambda p: p.commodity),
        customer_class=cat(lambda p: p.customer_class),
        area=cat(lambda p: p.area),
        latitude=cat(lambda p: p.latitude),
        longitude=cat(lambda p: p.longitude),
        import_only=cat(lambda p: p.import_only),
        wrap=cat(lambda p: p.wrap),
        cumulative=any(p.cumulative for p, _ in got),
        export=cat(lambda p: p.export, lambda p: np.full((p.n_meters, n_days), np.nan)),
        hourly=cat(lambda p: p.hourly, lambda p: np.full((p.n_meters, n_days, 24), np.nan)) if any_hourly else None,
        unit=cat(lambda p: p.unit, lambda p: np.full(p.n_meters, "", dtype=object)),
        meter_ids=list(cat(lambda p: np.array(p.meter_ids or [None] * p.n_meters, dtype=object))),
    )
    data.vee_exceptions = cat(lambda p: p.vee_exceptions, lambda p: np.zeros(p.n_meters))
    data.estimate_streak = cat(lambda p: p.estimate_streak, lambda p: np.zeros(p.n_meters, int))
    events: list[Event] = []
    offset = 0
    for p, r in got:
        local = {i: offset + j for j, i in enumerate(r)}
        events += [Event(int(where[local[e.meter]]), e.day, e.ts, e.kind, e.code) for e in p.events if e.meter in local]
        offset += len(r)
    data.events = sorted(events, key=lambda e: e.ts)
    # Each feeder's series comes from the shard holding its meter; the others have it empty.
    for p, _ in got:
        for code, series in p.feeders.items():
            if code not in data.feeders or (np.isfinite(series).any() and not np.isfinite(data.feeders[code]).any()):
                data.feeders[code] = series
        data.feeders_hourly.update(p.feeders_hourly)
        data.technical_loss_pct.update(p.technical_loss_pct)
    return data


def load_shards(
    settings: Settings,
    coordinator_url: str,
    shard_urls: Sequence[str],
    start: date | None = None,
    end: date | None = None,
    days: int = 365,
) -> TheftData:
    """The fleet's theft inputs, read on every shard at once and merged (see the module docstring)."""
    with connect(coordinator_url, role=reader_role(settings)) as conn:
        if not shards.ready(conn, len(shard_urls)):
            raise store.StoreError(
                f"the coordinator is not attached to these {len(shard_urls)} shards: attach them "
                "first (releve.shards.attach_shards, docs/scaling.md)"
            )
        order = [s for (s,) in conn.execute("SELECT serial FROM meter ORDER BY serial")]
        home = shards.shards_of(conn, order, len(shard_urls))
    with ThreadPoolExecutor(max_workers=max(1, len(shard_urls)), thread_name_prefix="theft-shard") as pool:
        # the daily aggregates must cover what landed before the period is chosen from them
        for done in [pool.submit(refresh_daily, url, role=editor_role(settings)) for url in shard_urls]:
            done.result()
        for done in [pool.submit(refresh_hourly, url, role=editor_role(settings)) for url in shard_urls]:
            done.result()
        start, end = period(settings, shard_urls, start, end, days)
        futures = [pool.submit(_load_shard, settings, url, start, end) for url in shard_urls]
        parts = [f.result() for f in futures]
    return merge(parts, home, order)


def rank_shards(
    settings: Settings,
    url: str,
    shard_urls: Sequence[str],
    *,
    start: date | None = None,
    end: date | None = None,
    days: int = DEFAULT_DAYS,
    keep: int = DEFAULT_KEEP,
    order: str = DEFAULT_ORDER,
    filters: dict[str, Any] | None = None,
    tariff: dict[str, float] | None = None,
    include_inspected: bool = False,
    store_run: bool = True,
    progress: Progress | None = None,
) -> store.DatabaseRanking:
    """``store.rank_database`` over the shards: inputs gathered from them, scored and stored on the coordinator.

    ``progress``: see :data:`analytics.theft.features.Progress`.
    """
    from analytics.theft.ranking import score

    filters = filters or {}
    data = load_shards(settings, url, shard_urls, start, end, days)
    with connect(url, role=reader_role(settings)) as conn:
        labels = store.training_labels(conn)
        exclude = set() if include_inspected else store.inspected(conn)
        currency = store.bill_currency(conn)
    ranking = score(
        data,
        training=(labels.x, labels.y) if len(labels.y) else None,
        tariff=tariff or {},
        exclude=exclude,
        progress=progress,
    )
    cands = ranking.candidates(keep, by=order, **filters)
    run_id = None
    if store_run:
        params = {
            "order": order,
            "filters": filters,
            "tariff": tariff or {},
            "keep": keep,
            "shards": len(shard_urls),
            "excluded": len(exclude),
            "labels": len(labels.y),
            "model_note": ranking.model_note(),
            "currency": currency,
        }
        run_id = store.save_run(
            settings,
            url,
            cands,
            "database",
            params,
            data,
            n_labels=ranking.model.n_labels if ranking.model else 0,
            model=ranking.model_name,
        )
    return store.DatabaseRanking(
        cands, run_id, ranking.model_name, data, len(exclude), len(labels.y), ranking.model_note(), currency=currency
    )

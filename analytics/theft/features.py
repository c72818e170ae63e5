"""Engineered features per meter, computed once from :class:`TheftData` with every signal.

:func:`compute_features` runs the signals of :mod:`analytics.theft.signals` and keeps their
intermediate arrays (:class:`Features`), so that the ranking can explain each candidate with the
series and events behind its score.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import multiprocessing as mp
import os
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

import numpy as np

from analytics.theft import signals as sg
from analytics.theft.data import Event, TheftData
from releve.arrays import BoolArray, FloatArray, IntArray

#: Feature columns, in order. All point the same way: higher is more suspicious, except the
#: fault-explaining ones (``catch_up_days``, ``frozen_days``, ``rollovers``, ``index_faults``)
#: that tell honest faulty meters apart.
FEATURES: tuple[str, ...] = (
    "drop_depth",  # 1 − mean(consumption / expected) over the longest low run
    "drop_days",  # length of that run
    "drop_share",  # its missing energy over the meter's expected yearly energy
    "balance_share",  # share of the missing energy the area's unexplained loss accounts for
    "has_balance",  # 1 when the meter's area has a feeder / bulk meter
    "has_interval",  # 1 when the meter's area feeder has hourly (interval) totals
    "interval_strength",  # the hourly feeder residual this meter explains, over the noise (F-like, summed)
    "interval_share",  # that residual's energy over the meter's own recorded energy
    "interval_energy",  # energy of the feeder residual attributed to this meter
    "recent_level_z",  # last 30 days' level against the same season earlier, fleet robust z (down)
    "recent_shape_z",  # the highest of the same test on zeros, clipped peaks, spread, smoothness, shape
    "recent_drop",  # 1 − last 30 days / first 45 days, both over the seasonal index (ongoing loss)
    "spread_run_z",  # the strongest run of weeks with a flatter day than the meter's others, fleet robust z
    "flat_level",  # that run's mean day over 24 × the meter's 10th-percentile hour (≈ 1: flat at its base load)
    "mark_zeroed",  # run of weeks with exact-zero hours on normal days, share above the meter's other weeks
    "mark_flat",  # the same for days whose every hour recorded one value
    "mark_ceiling",  # the same for days at a ceiling value the meter repeats (capped peaks)
    "alternate_weeks",  # the strongest run of weeks whose level alternates week by week (on/off theft), ~|log share|
    "reversed_run",  # longest run of weeks (count) whose mean day is the earliest weeks' day reversed in time
    "recent_texture_z",  # last 30 days' half-hour texture (median |log step|) against the same season, fleet z (up)
    "steps_held",  # last 30 days against the same season: log(largest hourly rises' ratio) − log(level ratio)
    "small_steps",  # largest hourly rises below the fleet's for the meter's level (log-log line), robust z (up)
    "area_score",  # the area's mean excess loss share over its worst 30 days
    "zero_run",  # longest run of zero days while the meter reported
    "profile_score",  # fall of the daily-shape correlation (0–2, × duration)
    "profile_reversed",  # the anomalous days' shape anti-correlates with the usual one
    "profile_flat",  # the anomalous days are flat
    "event_score",  # strongest tamper-type event, more when consumption fell after it
    "event_count",  # tamper-type events
    "reverse_share",  # export / reverse-flow energy on an import-only meter
    "peer_low",  # robust z below peers of the same class and area
    "silence_high",  # silent days when consumption should be high
    "silence_unrecovered",  # silent days not caught up by the register afterwards
    "catch_up_days",  # days rebuilt from a catch-up (comm loss, frozen register)
    "frozen_days",  # zero days that a catch-up proved were a frozen register
    "rollovers",  # negative steps explained by the register width
    "index_faults",  # unexplained negative steps, scale jumps, spikes (+ VEE index exceptions)
    "estimate_streak",  # longest run of estimated days (VEE)
)


@dataclass
class Features:
    """The feature matrix and the intermediate signals behind it."""

    data: TheftData
    names: tuple[str, ...]
    X: FloatArray
    cleaned: sg.Cleaned
    season: FloatArray
    drop: sg.Drop
    profile: sg.ProfileChange | None  # from the hourly signals: each day's ``corr`` kept, its ``flatness`` not ((m, 0))
    balance: sg.Balance | None
    area_names: list[str]
    area_of: IntArray
    events_by_meter: dict[int, list[tuple[Event, float, float]]] = field(default_factory=dict)
    matched_energy: FloatArray | None = None
    interval: sg.IntervalBalance | None = None
    interval_areas: list[str] = field(default_factory=list)
    recent_shift: FloatArray | None = None
    recent_z: FloatArray | None = None
    reverse_energy: FloatArray | None = None
    spread_run: tuple[IntArray, IntArray] | None = None  # first day, end day of that flatter run per meter
    mark_runs: dict[str, tuple[IntArray, IntArray]] = field(default_factory=dict)  # mark → first, end day
    alternate_run: tuple[IntArray, IntArray] | None = None  # first day, end day of the on/off weeks
    reversed_run: tuple[IntArray, IntArray] | None = None  # first day, end day of the reversed weeks' run
    recent_texture: FloatArray | None = None  # per meter, that texture's shift (recent − reference)

    def col(self, name: str) -> FloatArray:
        """One feature column."""
        return self.X[:, self.names.index(name)]


#: Upper quantile of the deseasonalised series taken as the meter's normal level (a drop lasting
#: up to 20 % of the period cannot hide itself; longer ones still show against the quantile).
LEVEL_QUANTILE = 0.8


#: Groups of hourly meters worked on at once, a process each (:func:`_hourly_signals`; at most the cores).
HOURLY_WORKERS = 2

#: A memory-backed folder where each group's hourly array is left for its worker process, which maps
#: it, instead of sending it through the pool's pipe (pickled, written, read and unpickled: four
#: copies of ≈ 28 MB a group, 7 GB at 100,000 meters). None, or no such folder: the pipe.
HAND_OVER_DIR: str | None = "/dev/shm"  # noqa: S108 (the parent of a mkdtemp folder, mode 0700)
#: The start of each ranking's folder name there (``bench/theft_db.py`` counts its files in the peak).
HAND_OVER_PREFIX = "releve-hourly-"

#: Row-wise signals over more meters than this run a block of rows at a time (:func:`by_rows`).
ROW_BLOCK = 8_192

#: :func:`analytics.theft.signals.weekly_alternation` runs this many meters at a time: its dozen
#: passes over a block's meters × days then stay in the processor's cache.
ALTERNATION_BLOCK = 2_048

_T = TypeVar("_T")


def by_rows(fn: Callable[..., _T], *arrays: np.ndarray, rows: int = ROW_BLOCK, **kw: Any) -> _T:
    """``fn(*arrays, **kw)`` for a signal that works meter by meter, a block of ``rows`` rows at a time.

    The same figures as one call (each row's result depends on that row only), but the signal's
    temporaries — several meters × days arrays each — are one block's, not the fleet's: at 100,000
    meters × 365 days each is 0.3 GB. ``fn`` returns a dataclass, or a tuple, of per-row arrays.
    """
    m = arrays[0].shape[0]
    if m <= rows:
        return fn(*arrays, **kw)
    out: dict[str, np.ndarray] = {}
    kind: Any = None
    for a in range(0, m, rows):
        part: Any = fn(*(x[a : a + rows] for x in arrays), **kw)
        kind = type(part)
        values = part if isinstance(part, tuple) else [getattr(part, f.name) for f in fields(part)]
        names = [str(k) for k in range(len(part))] if isinstance(part, tuple) else [f.name for f in fields(part)]
        for name, value in zip(names, values, strict=True):
            v = np.asarray(value)
            if name not in out:
                out[name] = np.empty((m, *v.shape[1:]), dtype=v.dtype)
            out[name][a : a + rows] = v
        del part, values
    result: Any = tuple(out.values()) if kind is tuple else kind(**out)
    return result


def _codes(values: np.ndarray) -> IntArray:
    _, inverse = np.unique(values.astype(str), return_inverse=True)
    return inverse.astype(np.int64).reshape(-1)


@dataclass
class _Hourly:
    """What the features take from hourly data (and the daily statistics' shift without it)."""

    profile: sg.ProfileChange | None
    hour_spikes: FloatArray
    interval: sg.IntervalBalance | None
    shift: FloatArray  # meters × CHANGE_STATS (NaN: not testable), see sg.recent_shift
    spread: tuple[FloatArray, IntArray, IntArray] | None  # sg.segment_shift of the weekly spread
    marks: tuple[FloatArray, IntArray, IntArray] | None = None  # sg.run_contrast per mark: meters × MARKS each
    reversed: tuple[FloatArray, IntArray, IntArray] | None = None  # longest run of sg.reversed_weeks (weeks)
    base_hour: FloatArray | None = None  # per meter, its 10th-percentile hour (the base load)
    steps_held: FloatArray | None = None  # sg.steps_held per meter
    step_size: FloatArray | None = None  # sg.step_size per meter (NaN: too few rises)


@dataclass
class _Own:
    """A group's per-meter hourly signals (:func:`_own_signals`), every field one value (or row) per meter."""

    corr: FloatArray  # sg.profile_change: each day's agreement with the usual shape
    prof_start: IntArray
    prof_end: IntArray
    prof_score: FloatArray
    prof_usual: FloatArray
    prof_during: FloatArray
    prof_reversed: BoolArray
    prof_flattened: BoolArray
    shift: FloatArray  # sg.recent_shift of the daily statistics
    spread: FloatArray  # sg.segment_shift of the weekly spread, and its first and end week
    spread_w0: IntArray
    spread_w1: IntArray
    mark_share: FloatArray  # sg.run_contrast per mark (meters × MARKS), and its first and end week
    mark_w0: IntArray
    mark_w1: IntArray
    reversed_weeks: IntArray  # the longest run of reversed weeks, and its first and end week
    reversed_w0: IntArray
    reversed_w1: IntArray
    base_hour: FloatArray
    steps_held: FloatArray
    step_size: FloatArray


#: Meters whose own signals a worker computes at once (:func:`_own_signals` via :func:`by_rows`): their
#: temporaries are a dozen meters × days × 24 arrays, so two workers hold two blocks' of them.
OWN_BLOCK = 200


def _own_signals(
    hourly: FloatArray, values: FloatArray, usual: FloatArray, weekday: IntArray, fleet_season: FloatArray
) -> _Own:
    """The per-meter hourly signals of some meters (each row's depend on that row only)."""
    per_mark = sg.tamper_marks(hourly)  # per meter: a group's marks are the fleet's
    marks = [sg.run_contrast(sg.weekly_means(per_mark[:, j])) for j in range(per_mark.shape[1])]
    del per_mark
    weeks, first, end, _ = sg.longest_true_span(sg.reversed_weeks(hourly) > 0)  # NaN weeks break a run
    base_hour = sg.row_quantile(hourly.reshape(hourly.shape[0], -1), 0.1)
    held = sg.steps_held(hourly, values, fleet_season)
    step = sg.step_size(hourly)
    prof = sg.profile_change(hourly, weekday)  # its per-day flatness is not kept: only ``flattened`` reads it
    per_day = sg.daily_stats(hourly, values, weekday, usual=usual)
    shift = sg.recent_shift(per_day, fleet_season)
    spread_col = list(sg.CHANGE_STATS).index("spread")
    spread = sg.segment_shift(sg.weekly_means(per_day[:, spread_col]))
    del per_day
    return _Own(
        prof.corr,
        prof.start,
        prof.end,
        prof.score,
        prof.usual,
        prof.during,
        prof.reversed,
        prof.flattened,
        shift,
        *spread,
        np.column_stack([s for s, _, _ in marks]),
        np.column_stack([a for _, a, _ in marks]),
        np.column_stack([b for _, _, b in marks]),
        weeks,
        np.maximum(first, 0),
        np.maximum(end, 0),
        base_hour,
        held,
        step,
    )


@dataclass
class _Group:
    """One group's hourly signals (:func:`_group_signals`), for its meter rows and its areas."""

    rows: IntArray
    hour_spikes: FloatArray
    own: _Own
    areas: IntArray  # the hourly areas (indices into the ranking's list) the balance fitted
    interval: sg.IntervalBalance | None


def _group_signals(
    rows: IntArray,
    raw: FloatArray | str,
    values: FloatArray,
    weekday: IntArray,
    fleet_season: FloatArray,
    area_k: IntArray,
    feeders: FloatArray | None,
) -> _Group:
    """A group's hourly signals: its meters' own (:data:`OWN_BLOCK` meters at a time), and its areas' interval balance.

    ``raw`` is the group's hourly array as read (or the ``.npy`` file holding it, mapped read-only:
    :data:`HAND_OVER_DIR`), ``values`` its meters' daily series, ``area_k``
    each meter's hourly area (an index into the ranking's list of areas with hourly feeder totals,
    −1 none) and ``feeders`` those areas' hourly totals, in ascending index (None: no balance).
    Runs in a worker process (:func:`_hourly_signals`): numpy's BLAS held to one thread there, so
    the figures are those of the same calls anywhere, and the signals' RuntimeWarnings (empty
    slices, silenced signal by signal) ignored.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hours = np.load(raw, mmap_mode="r") if isinstance(raw, str) else raw
        hourly, hour_spikes = sg.clean_hourly(hours)  # a new array: the file is only read
        del raw, hours
        usual = sg.usual_hour_profile(hourly, weekday)  # for the balance's regressors and the daily statistics
        own = by_rows(_own_signals, hourly, values, usual, rows=OWN_BLOCK, weekday=weekday, fleet_season=fleet_season)
        present = np.unique(area_k[area_k >= 0])
        interval = None
        if feeders is not None and present.size:
            local = np.where(area_k >= 0, np.searchsorted(present, area_k), -1)
            interval = sg.interval_balance(feeders, hourly, local, weekday, usual=usual)
    _give_back_freed_memory()
    return _Group(rows, hour_spikes, own, present, interval)


#: ``progress(meters, of)``: called as each group's hourly signals are in, with the group's meter
#: count and the fleet's (every meter is in one group, with hourly data or not).
Progress = Callable[[int, int], object]


def _hourly_signals(
    data: TheftData,
    values: FloatArray,
    hourly_areas: list[str],
    fleet_season: FloatArray,
    progress: Progress | None = None,
) -> _Hourly:
    """The hourly signals, a group of whole areas at a time (:meth:`TheftData.hourly_chunks`).

    Every hourly signal is per meter, or per area for the interval balance, so groups of whole
    areas give the same figures as the fleet at once while only the groups in work are held
    (with the balance's regressors, eight times their hourly array with the clock terms).
    ``progress`` hears of each group as it is kept (:data:`Progress`).
    """
    m, d = values.shape
    weekday = data.weekdays()
    if data.hourly is None:
        # Meter by meter: a block of rows at a time holds one block's per-day statistics.
        shift = np.concatenate(
            [
                sg.recent_shift(sg.daily_stats(None, values[a : a + ROW_BLOCK], weekday), fleet_season)
                for a in range(0, max(m, 1), ROW_BLOCK)
            ]
        )
        return _Hourly(None, np.zeros(m), None, shift, None)
    n_stats = len(sg.CHANGE_STATS)
    hour_spikes = np.zeros(m)
    shift = np.full((m, n_stats), np.nan)
    stat, w0, w1 = np.zeros(m), np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
    # The fleet keeps each day's agreement with the usual shape (a candidate's evidence shows it) but
    # not each day's flatness, which only the group's verdicts (``flattened``) read: a meters × days
    # array less at the ranking's peak (0.3 GB at 100,000 × 365).
    prof = sg.ProfileChange(
        np.full((m, d), np.nan),
        np.full((m, 0), np.nan),
        np.full(m, -1, dtype=np.int64),
        np.full(m, -1, dtype=np.int64),
        np.zeros(m),
        np.full(m, np.nan),
        np.full(m, np.nan),
        np.zeros(m, dtype=bool),
        np.zeros(m, dtype=bool),
    )
    interval = None
    h_index = {a: k for k, a in enumerate(hourly_areas)}
    if hourly_areas:
        interval = sg.IntervalBalance(
            np.zeros((m, d)),
            np.zeros(m),
            np.zeros(m),
            np.full(m, -1, dtype=np.int64),
            np.zeros(m, dtype=np.int64),
            np.full(m, -1, dtype=np.int64),
            np.full((len(hourly_areas), d), np.nan),
            np.full((len(hourly_areas), d), np.nan),
        )
    n_marks = len(sg.MARKS)
    mark_share = np.zeros((m, n_marks))
    mark_w0, mark_w1 = np.zeros((m, n_marks), dtype=np.int64), np.zeros((m, n_marks), dtype=np.int64)
    rev, rev_w0, rev_w1 = np.zeros(m), np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.int64)
    base_hour = np.full(m, np.nan)
    held = np.zeros(m)
    step = np.full(m, np.nan)

    def task(rows: IntArray, raw: FloatArray | str) -> tuple[Any, ...]:
        """The arguments of :func:`_group_signals` for one group."""
        area_k = np.array([h_index.get(str(a), -1) for a in data.area[rows]], dtype=np.int64)
        present = np.unique(area_k[area_k >= 0])
        feeders = np.stack([data.feeders_hourly[hourly_areas[k]] for k in present]) if present.size else None
        return rows, raw, values[rows], weekday, fleet_season, area_k, feeders

    def keep(g: _Group) -> None:
        """A group's signals, written into the fleet's arrays at its rows and areas."""
        rows, own = g.rows, g.own
        hour_spikes[rows] = g.hour_spikes
        mark_share[rows], mark_w0[rows], mark_w1[rows] = own.mark_share, own.mark_w0, own.mark_w1
        rev[rows], rev_w0[rows], rev_w1[rows] = own.reversed_weeks, own.reversed_w0, own.reversed_w1
        base_hour[rows], held[rows], step[rows] = own.base_hour, own.steps_held, own.step_size
        prof.corr[rows] = own.corr
        for name in ("start", "end", "score", "usual", "during", "reversed", "flattened"):
            getattr(prof, name)[rows] = getattr(own, f"prof_{name}")
        shift[rows] = own.shift
        stat[rows], w0[rows], w1[rows] = own.spread, own.spread_w0, own.spread_w1
        if interval is not None and g.interval is not None:
            for name in ("attributed", "strength", "share", "kind", "windows", "first_day"):
                getattr(interval, name)[rows] = getattr(g.interval, name)
            interval.technical[g.areas] = g.interval.technical
            interval.residual[g.areas] = g.interval.residual
        if progress is not None:
            progress(int(rows.size), m)

    # One group is worked on here. More are worked on by HOURLY_WORKERS processes, a group each
    # (its own signals and its areas' balance), while this process reads the next groups: threads
    # would share the interpreter, and the balance's thousands of small solves a window hold it
    # between their numpy calls (two threads ran a group 1.3 × faster than one, two processes
    # 1.9 ×). In flight: a group per worker and one more, read ahead. Every group writes only its
    # own rows and areas, so the figures are those of one group after another.
    chunks = data.hourly_chunks()
    ahead = list(itertools.islice(chunks, 2))  # one group, or more: a pool
    if len(ahead) == 1:
        keep(_group_signals(*task(*ahead.pop())))
    elif ahead:
        workers = max(1, min(HOURLY_WORKERS, os.cpu_count() or 1))
        # The pool shuts down (its workers done with their files) before the folder goes.
        with (
            _hand_over_folder() as folder,
            ProcessPoolExecutor(max_workers=workers, mp_context=_worker_context()) as pool,
        ):
            running: deque[tuple[Future[_Group], str | None]] = deque()

            def done() -> None:
                """The oldest group's signals kept, and its file gone."""
                future, path = running.popleft()
                keep(future.result())
                if path is not None:
                    os.unlink(path)

            # The two groups read ahead are taken out of ``ahead`` as they go: none is held twice.
            for n, (rows, raw) in enumerate(itertools.chain((ahead.pop(0) for _ in range(len(ahead))), chunks)):
                path = None if folder is None else _left_for_worker(raw, os.path.join(folder, f"{n}.npy"))
                running.append((pool.submit(_group_signals, *task(rows, raw if path is None else path)), path))
                del raw
                while len(running) > workers + 1 or (running and running[0][0].done()):
                    done()
            while running:
                done()
    return _Hourly(
        prof,
        hour_spikes,
        interval,
        shift,
        (stat, w0, w1),
        (mark_share, mark_w0, mark_w1),
        (rev, rev_w0, rev_w1),
        base_hour,
        held,
        step,
    )


@contextlib.contextmanager
def _hand_over_folder() -> Iterator[str | None]:
    """A fresh folder in :data:`HAND_OVER_DIR` for one ranking's group files, removed with what is left in it.

    None where there is no such folder (not Linux) or it cannot be written: the groups go through the pipe.
    """
    if HAND_OVER_DIR is None or not os.path.isdir(HAND_OVER_DIR) or not os.access(HAND_OVER_DIR, os.W_OK):
        yield None
        return
    with tempfile.TemporaryDirectory(prefix=HAND_OVER_PREFIX, dir=HAND_OVER_DIR) as folder:
        yield folder


def _left_for_worker(raw: FloatArray, path: str) -> str | None:
    """``path`` holding ``raw``; None (and no file) where the folder is full: that group goes through the pipe.

    A container's ``/dev/shm`` is often small (Docker's default is 64 MB: two groups of 400 meters).
    """
    try:
        np.save(path, raw)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return None
    return path


def _worker_context() -> BaseContext:
    """How the hourly workers start: forked from a server process that has imported the signals.

    Not forked from the ranking itself, whose fleet-sized arrays a forked child would keep
    alive (copy on write) as the ranking goes on writing and freeing them; not spawned afresh
    per ranking, which imports numpy and scipy again in every worker. ``spawn`` where there is
    no ``forkserver`` (Windows).
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["analytics.theft.features"])
    return ctx


def _give_back_freed_memory() -> None:
    """Hand the C heap's freed pages back to the system (glibc's ``malloc_trim``), where there is one.

    A group's hourly arrays are a few MB each: malloc takes them from its heaps (one per worker
    thread), not from mappings of their own, and once freed they stay in the process's resident
    size, the heaps growing apart group after group — 0.4 GB over 100,000 hourly meters, at the
    ranking's peak. Dask's workers call it for the same reason. A no-op without glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, loaded once (None where there is none)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def _texture_change(texture: FloatArray | None, fleet_season: FloatArray, m: int) -> tuple[FloatArray, FloatArray]:
    """The before/after test of the half-hour texture: (shift, fleet robust z), upwards.

    :func:`analytics.theft.signals.recent_shift` of the daily texture
    (:func:`analytics.theft.data.interval_texture`): its last 30 days against the same season
    earlier, set against the fleet's shifts (real households' half-hours change too, and that is
    the reference). Zeros without interval data.
    """
    if texture is None:
        return np.zeros(m), np.zeros(m)
    # recent_shift reads its first statistic as the level (theft direction down): negated, up.
    t = -sg.recent_shift(np.asarray(texture, dtype=float)[:, None, :], fleet_season)
    return np.nan_to_num(t[:, 0]), sg.shift_z(t)[:, 0]


def group_median(table: FloatArray, groups: IntArray) -> FloatArray:
    """``np.nanmedian(table[groups], axis=0)`` to the bit for a table without NaN, without building ``table[groups]``.

    Per day, the median over the rows of a table (groups × days) each repeated as many times as
    its group has members: the middle order statistics found on the table's sorted column by the
    members' cumulative counts, then numpy's median of them (the middle value, or the mean of the
    two middle values). At 100,000 meters numpy's call is a loop over the days, each a sort of
    the fleet's column.
    """
    m = groups.size
    if m == 0 or not np.isfinite(table).all():
        return np.nanmedian(table[groups], axis=0)
    counts = np.bincount(groups, minlength=table.shape[0])
    order = np.argsort(table, axis=0, kind="stable")
    ordered = np.take_along_axis(table, order, axis=0)
    below = np.cumsum(counts[order], axis=0)  # members at or below each sorted value

    def rank(k: int) -> FloatArray:
        at = (below <= k).sum(axis=0)  # the first sorted value with more than k members at or below it
        return ordered[at, np.arange(table.shape[1])]

    lo, hi = rank((m - 1) // 2), rank(m // 2)
    return lo if m % 2 else (lo + hi) / 2


def zero_days(values: FloatArray, expected: FloatArray) -> np.ndarray:
    """Meters × days: a day recorded as zero where the meter was expected to use energy.

    ``expected > 0`` is ``np.nan_to_num(expected) > 0`` (NaN is not above 0, nor mapped above it)
    without a fleet-sized copy of ``expected``.
    """
    return np.isfinite(values) & (values <= 1e-9) & (expected > 0)


#: ``flat_level`` where it is not known (no run, no hourly data, no base load): far above a base load.
FLAT_LEVEL_NONE = 10.0


def _run_level(values: FloatArray, run: tuple[IntArray, IntArray], base_hour: FloatArray) -> FloatArray:
    """Per meter, the mean day over ``run`` (first day, end day) divided by 24 × its base-load hour."""
    import warnings

    m, d = values.shape
    days = np.arange(d)
    level = np.empty(m)
    # A block of meters at a time: the masked copy and nanmean's own are a block's, not the fleet's
    # (at 100,000 hourly meters × 365 days they were 0.7 GB at the ranking's peak; the same means).
    for a in range(0, m, ROW_BLOCK):
        b = min(a + ROW_BLOCK, m)
        inside = (days[None, :] >= run[0][a:b, None]) & (days[None, :] < run[1][a:b, None])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            level[a:b] = np.nanmean(np.where(inside, values[a:b], np.nan), axis=1)
    base = 24.0 * base_hour
    ok = np.isfinite(level) & np.isfinite(base) & (base > 0)
    return np.where(ok, np.clip(level / np.where(ok, base, 1.0), 0.0, FLAT_LEVEL_NONE), FLAT_LEVEL_NONE)


def compute_features(data: TheftData, drop_threshold: float = 0.8, progress: Progress | None = None) -> Features:
    """Run every signal over ``data`` and assemble the feature matrix.

    ``progress`` hears of the hourly signals' groups as they are done (:data:`Progress`): with
    hourly data they are most of a ranking's time.
    """
    m, d = data.daily.shape
    wrap = np.full(m, np.inf) if data.wrap is None else np.asarray(data.wrap, dtype=float)  # clean_daily's default
    cleaned = by_rows(sg.clean_daily, data.daily, wrap, cumulative=data.cumulative)
    values = cleaned.values
    season_groups = _codes(np.array([f"{c}|{k}" for c, k in zip(data.commodity, data.customer_class, strict=True)]))
    season_table = sg.seasonal_index(values, season_groups)
    season = season_table[season_groups]
    # sg.ROWS meters a block: its dozen meters × days temporaries stay small (kernel time 0.4–0.6 s instead
    # of 0.9–1.1 s in blocks of ROW_BLOCK at 100,000 × 365).
    drop = by_rows(sg.sustained_drop, values, season, rows=sg.ROWS, threshold=drop_threshold, quantile=LEVEL_QUANTILE)

    # Events: weight, and the fall of consumption after each.
    ev_meter = np.array([e.meter for e in data.events], dtype=np.int64)
    ev_day = np.array([e.day for e in data.events], dtype=np.int64)
    ev_w = np.array([sg.EVENT_WEIGHTS.get(e.kind, 0.0) for e in data.events])
    ev_drops, event_score = sg.event_drop(ev_meter, ev_day, ev_w, drop.ratio)
    events_by_meter: dict[int, list[tuple[Event, float, float]]] = {}
    event_count = np.zeros(m)
    for e, w, dr in zip(data.events, ev_w, ev_drops, strict=True):
        events_by_meter.setdefault(e.meter, []).append((e, float(w), float(dr)))
        if w > 0:
            event_count[e.meter] += 1

    rev = sg.reverse_share(values, data.export, data.import_only)
    reverse_energy = (
        np.nansum(np.clip(data.export, 0, None), axis=1) * data.import_only if data.export is not None else np.zeros(m)
    )

    # Energy balance per area with a feeder / bulk meter.
    area_names = sorted(a for a in data.feeders if a)
    area_index = {a: k for k, a in enumerate(area_names)}
    area_of = np.array([area_index.get(str(a), -1) for a in data.area], dtype=np.int64)
    balance = None
    balance_share = np.zeros(m)
    matched = np.zeros(m)
    area_score = np.zeros(m)
    if area_names:
        feeder = np.vstack([data.feeders[a] for a in area_names])
        customers = np.zeros((len(area_names), d))
        for a in range(0, m, ROW_BLOCK):  # (in row order, as one call would add them)
            rows = slice(a, a + ROW_BLOCK)
            filled = np.where(np.isfinite(values[rows]), values[rows], np.nan_to_num(drop.expected[rows]))
            inside = area_of[rows] >= 0
            np.add.at(customers, area_of[rows][inside], filled[inside])
        del filled
        tech = np.array([data.technical_loss_pct.get(a, np.nan) for a in area_names])
        balance = sg.energy_balance(feeder, customers, tech)
        cand = np.flatnonzero((area_of >= 0) & (drop.start >= 0) & (drop.depth >= 0.1))
        if cand.size:
            gap = np.where(
                drop.low[cand] & np.isfinite(values[cand]),
                np.maximum(np.nan_to_num(drop.expected[cand]) - values[cand], 0.0),
                0.0,
            )
            balance_share[cand] = sg.balance_coincidence(gap, cand, area_of, balance.residual)
        matched = balance_share * drop.deficit
        area_score = np.where(area_of >= 0, balance.score[np.maximum(area_of, 0)], 0.0)

    interval_z = np.zeros(m)
    interval_share = np.zeros(m)
    has_interval = np.zeros(m)
    interval_energy = np.zeros(m)
    hourly_areas = [a for a in area_names if a in data.feeders_hourly]
    fleet_season = group_median(season_table, season_groups)  # np.nanmedian(season, axis=0)
    hs = _hourly_signals(data, values, hourly_areas, fleet_season, progress)
    profile, hour_spikes, interval = hs.profile, hs.hour_spikes, hs.interval
    if interval is not None:
        h_index = {a: k for k, a in enumerate(hourly_areas)}
        h_area_of = np.array([h_index.get(str(a), -1) for a in data.area], dtype=np.int64)
        has_interval = (h_area_of >= 0).astype(float)
        interval_z = interval.strength
        interval_energy = interval.energy
        interval_share = interval.share

    recent_shift, recent_z = np.nan_to_num(hs.shift), sg.shift_z(hs.shift)
    recent_level_z = recent_z[:, 0]
    recent_shape_z = recent_z[:, 1:].max(axis=1) if recent_z.shape[1] > 1 else np.zeros(m)
    recent_drop = sg.relative_drop(values, season)
    spread_run_z = np.zeros(m)
    spread_run = None
    flat_level = np.full(m, FLAT_LEVEL_NONE)
    if hs.spread is not None:
        stat, w0, w1 = hs.spread
        spread_run_z = sg.fleet_z(stat)
        offset = d - (d // 7) * 7
        spread_run = (offset + 7 * w0, offset + 7 * w1)
        if hs.base_hour is not None:
            flat_level = _run_level(values, spread_run, hs.base_hour)

    marks = {n: np.zeros(m) for n in sg.MARKS}
    mark_runs: dict[str, tuple[IntArray, IntArray]] = {}
    if hs.marks is not None:
        share, mw0, mw1 = hs.marks
        offset = d - (d // 7) * 7
        for j, n in enumerate(sg.MARKS):
            marks[n] = share[:, j]
            mark_runs[n] = (offset + 7 * mw0[:, j], offset + 7 * mw1[:, j])

    alternate_weeks, alt_first, alt_end = by_rows(sg.weekly_alternation, values, season, rows=ALTERNATION_BLOCK)
    reversed_run = np.zeros(m)
    reversed_span = None
    if hs.reversed is not None:
        weeks_r, rw0, rw1 = hs.reversed
        offset = d - (d // 7) * 7
        reversed_run = weeks_r
        reversed_span = (offset + 7 * rw0, offset + 7 * rw1)
    # After the hourly pass: a lazy hourly array from the database brings the texture with its hours.
    recent_texture, recent_texture_z = _texture_change(data.texture, fleet_season, m)

    peer_groups = _codes(
        np.array([f"{c}|{k}|{a}" for c, k, a in zip(data.commodity, data.customer_class, data.area, strict=True)])
    )
    peer_low = sg.peer_outlier(drop.level, peer_groups)
    small_steps = np.zeros(m)
    if hs.step_size is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_day = np.nanmean(values, axis=1)
        small_steps = sg.small_steps(hs.step_size, mean_day, season_groups)
    zero = zero_days(values, drop.expected)
    zero_run = sg.longest_true_run(zero)
    silence_high = np.concatenate(
        [sg.silence_when_high(data.daily[a : a + ROW_BLOCK], season[a : a + ROW_BLOCK]) for a in range(0, m, ROW_BLOCK)]
        or [np.zeros(0, dtype=np.int64)]
    )
    expected_year = np.nansum(drop.expected, axis=1)
    drop_share = drop.deficit / np.maximum(expected_year, 1e-9)
    vee_exc = np.zeros(m) if data.vee_exceptions is None else np.asarray(data.vee_exceptions, dtype=float)
    streak = np.zeros(m) if data.estimate_streak is None else np.asarray(data.estimate_streak, dtype=float)
    has_balance = (area_of >= 0).astype(float)

    cols = {
        "drop_depth": drop.depth,
        "drop_days": np.where(drop.start >= 0, drop.end - drop.start, 0).astype(float),
        "drop_share": drop_share,
        "balance_share": balance_share,
        "has_balance": has_balance,
        "has_interval": has_interval,
        "interval_strength": interval_z,
        "interval_share": interval_share,
        "interval_energy": interval_energy,
        "recent_level_z": recent_level_z,
        "recent_shape_z": recent_shape_z,
        "recent_drop": recent_drop,
        "spread_run_z": spread_run_z,
        "flat_level": flat_level,
        "mark_zeroed": marks["zeroed"],
        "mark_flat": marks["flat"],
        "mark_ceiling": marks["ceiling"],
        "alternate_weeks": alternate_weeks,
        "reversed_run": reversed_run,
        "recent_texture_z": recent_texture_z,
        "steps_held": hs.steps_held if hs.steps_held is not None else np.zeros(m),
        "small_steps": small_steps,
        "area_score": area_score,
        "zero_run": zero_run.astype(float),
        "profile_score": profile.score if profile is not None else np.zeros(m),
        "profile_reversed": profile.reversed.astype(float) if profile is not None else np.zeros(m),
        "profile_flat": profile.flattened.astype(float) if profile is not None else np.zeros(m),
        "event_score": event_score,
        "event_count": event_count,
        "reverse_share": rev,
        "peer_low": peer_low,
        "silence_high": silence_high.astype(float),
        "silence_unrecovered": cleaned.silence_unrecovered.astype(float),
        "catch_up_days": cleaned.catch_up.sum(axis=1).astype(float),
        "frozen_days": cleaned.frozen_days.astype(float),
        "rollovers": cleaned.rollovers.astype(float),
        "index_faults": cleaned.index_faults.astype(float) + vee_exc + hour_spikes,
        "estimate_streak": streak,
    }
    x = np.column_stack([np.nan_to_num(cols[n], nan=0.0, posinf=0.0, neginf=0.0) for n in FEATURES])
    return Features(
        data=data,
        names=FEATURES,
        X=x,
        cleaned=cleaned,
        season=season,
        drop=drop,
        profile=profile,
        balance=balance,
        area_names=area_names,
        area_of=area_of,
        events_by_meter=events_by_meter,
        matched_energy=matched,
        reverse_energy=reverse_energy,
        interval=interval,
        interval_areas=hourly_areas,
        recent_shift=recent_shift,
        recent_z=recent_z,
        spread_run=spread_run,
        mark_runs=mark_runs,
        alternate_run=(alt_first, alt_end),
        reversed_run=reversed_span,
        recent_texture=recent_texture,
    )

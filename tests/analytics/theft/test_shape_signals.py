"""The hourly shape signals give the figures of their former forms, to the bit.

:func:`analytics.theft.signals.profile_change` no longer copies finite arrays through
``np.nan_to_num``, :func:`analytics.theft.signals.reversed_weeks` averages only the days up to the
last reference day and :func:`analytics.theft.signals.usual_hour_profile` gathers each day type hour
by hour: the former forms are kept here, and the new ones set against them on meters with
incomplete days, zero and flat days, negative hours, a meter that starts late and one with no data.
"""

from __future__ import annotations

import numpy as np
import pytest

from analytics.theft import signals as sg
from releve.arrays import FloatArray, IntArray


def _profile_change_former(
    hourly: FloatArray, weekday: IntArray, drop: float = 0.35, window: int = 7
) -> sg.ProfileChange:
    """The form before the change, kept to pin the new one."""
    m, d = hourly.shape[:2]
    tot = hourly.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        shape = hourly / tot[:, :, None]
    shape[~(tot > 0)] = np.nan
    daytype = np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))
    corr = np.full((m, d), np.nan)
    rcorr = np.full((m, d), np.nan)
    flat = np.full((m, d), np.nan)
    for t in range(3):
        cols = np.flatnonzero(daytype == t)
        if cols.size == 0:
            continue
        sub = shape[:, cols, :]
        valid = np.isfinite(sub).all(axis=2)
        # The mean shape, not the median: when an anomalous shape covers most days the mean still
        # carries the usual one (a median of mostly flat days is flat, and has no shape at all).
        n_valid = valid.sum(axis=1)
        ref = np.where(valid[:, :, None], sub, 0.0).sum(axis=1) / np.maximum(n_valid, 1)[:, None]
        ref[n_valid == 0] = np.nan
        a = np.where(valid[:, :, None], sub, 0.0)
        a = a - a.mean(axis=2, keepdims=True)
        b = np.where(np.isfinite(ref), ref, 0.0)
        b = b - b.mean(axis=1, keepdims=True)
        num = np.einsum("mdh,mh->md", np.nan_to_num(a), np.nan_to_num(b))
        sa = np.sqrt(np.einsum("mdh,mdh->md", np.nan_to_num(a), np.nan_to_num(a)))
        sb = np.sqrt(np.einsum("mh,mh->m", np.nan_to_num(b), np.nan_to_num(b)))
        with np.errstate(invalid="ignore", divide="ignore"):
            c = num / (sa * sb[:, None])
            fl = sa / sb[:, None]
        c = np.where(sa <= 1e-12, 0.0, c)  # a perfectly flat day has no shape at all
        c = np.where(valid & (sb[:, None] > 1e-12), c, np.nan)
        corr[:, cols] = c
        num_r = np.einsum("mdh,mh->md", a, b[:, ::-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            rc = np.where(sa <= 1e-12, 0.0, num_r / (sa * sb[:, None]))
        rcorr[:, cols] = np.where(valid & (sb[:, None] > 1e-12), rc, np.nan)
        flat[:, cols] = np.where(valid, fl, np.nan)
    # The usual agreement is an upper quantile: an anomalous shape may cover most of the period.
    # The run is found on corr − ½·(mirrored corr): a reversed day loses on both counts, a flat day
    # on the first.
    stat = corr - 0.5 * np.nan_to_num(rcorr)
    usual = sg.row_quantile(corr, 0.8)
    usual_stat = sg.row_quantile(stat, 0.8)
    smooth = sg.rolling_mean(stat, window)
    low = np.isfinite(smooth) & (smooth < (usual_stat - drop)[:, None])
    best_len, start, end, in_run = sg.longest_true_span(low)
    during = np.where(best_len > 0, sg._masked_mean(corr, in_run), np.nan)
    fl_during = np.where(best_len > 0, sg._masked_mean(flat, in_run), 1.0)
    rev_during = np.where(best_len > 0, sg._masked_mean(rcorr, in_run), np.nan)
    stat_during = np.where(best_len > 0, sg._masked_mean(stat, in_run), np.nan)
    score = np.where(best_len > 0, np.clip(usual_stat - stat_during, 0.0, 2.0) * np.minimum(best_len / 14.0, 1.0), 0.0)
    score = np.nan_to_num(score)
    return sg.ProfileChange(
        corr,
        flat,
        start,
        end,
        score,
        usual,
        during,
        np.asarray(np.nan_to_num(rev_during, nan=-1.0) > np.maximum(np.nan_to_num(during), 0.3)),
        np.asarray(np.nan_to_num(fl_during, nan=1.0) < 0.5),
    )


def _reversed_weeks_former(
    hourly: FloatArray,
    reference: int = 42,
    mirrored: float = 0.5,
    margin: float = 0.5,
    same_hours: float = 0.25,
    week: int = 7,
) -> FloatArray:
    """The form before the change, kept to pin the new one."""
    import warnings

    m, d, h = hourly.shape
    w = d // week
    if d < reference + 3 * week or h < 2:
        return np.zeros((m, w))
    x = np.asarray(hourly, dtype=float)
    tot = x.sum(axis=2)
    ok = np.isfinite(x).all(axis=2) & (tot > 0)
    shape = np.where(ok[:, :, None], x / np.where(ok, tot, 1.0)[:, :, None], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # The meter's own first ``reference`` complete days: a meter installed mid-period has its own start.
        first = ok & (np.cumsum(ok, axis=1) <= reference)
        ref = np.nanmean(np.where(first[:, :, None], shape, np.nan), axis=1)
        weekly = np.nanmean(shape[:, d - w * week :].reshape(m, w, week, h), axis=2)

    def corr(a: FloatArray, b: FloatArray) -> FloatArray:
        a = a - a.mean(axis=-1, keepdims=True)
        b = b - b.mean(axis=-1, keepdims=True)
        den = np.sqrt((a**2).sum(axis=-1) * (b**2).sum(axis=-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 1e-12, (a * b).sum(axis=-1) / den, 0.0)

    plain = corr(weekly, ref[:, None, :])
    mirror = corr(weekly, ref[:, None, ::-1])
    sorted_gap = np.abs(np.sort(weekly, axis=2) - np.sort(ref, axis=1)[:, None, :]).sum(axis=2)
    marked = (mirror > mirrored) & (mirror - plain > margin) & (sorted_gap < same_hours)
    known = np.isfinite(weekly).all(axis=2) & np.isfinite(ref).all(axis=1)[:, None]
    return np.where(known, marked.astype(float), np.nan)


def _usual_hour_profile_former(hourly: FloatArray, weekday: IntArray) -> FloatArray:
    """The form before the change, kept to pin the new one."""
    m, _d, h = hourly.shape
    tot = hourly.sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = hourly / tot[:, :, None]
    share[~(tot > 0)] = np.nan
    daytype = np.where(weekday == 5, 1, np.where(weekday == 6, 2, 0))
    out = np.full((m, 3, h), 1.0 / h)
    for t in range(3):
        cols = np.flatnonzero(daytype == t)
        if cols.size == 0:
            continue
        sub = share[:, cols, :]
        has = np.isfinite(sub).any(axis=1)
        med = np.where(has, sg.nanmedian_last(np.moveaxis(np.where(has[:, None, :], sub, 0.0), 1, -1)), np.nan)
        s = np.nansum(med, axis=1, keepdims=True)
        out[:, t, :] = np.where((s > 0) & np.isfinite(med), med / np.where(s > 0, s, 1.0), 1.0 / h)
    return out


def _fleet(seed: int, m: int = 9, d: int = 84) -> tuple[np.ndarray, np.ndarray]:
    """Hourly meters with what the shape signals must survive, and their weekdays."""
    rng = np.random.default_rng(seed)
    hourly = rng.exponential(size=(m, d, 24)).round(3)
    hourly[0, d // 2, 3] = np.nan  # an incomplete day
    hourly[1, : d // 4] = np.nan  # a meter installed late
    hourly[2, d // 8 : d // 3] = 0.0  # zero days
    hourly[3] = 1.25  # a flat meter
    hourly[4, d // 2 :] = hourly[4, d // 2 :, ::-1]  # reversed days
    hourly[5, ::3, 7] = -0.5  # negative hours
    hourly[6] = np.nan  # no data at all
    hourly[7, :, :12] = 0.0  # half days of zeros
    weekday = (np.arange(d) + seed) % 7
    return hourly, weekday


def _same(a: object, b: object) -> bool:
    return (
        bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))
        and np.asarray(a).dtype == np.asarray(b).dtype
    )


@pytest.mark.parametrize("seed", range(4))
def test_shape_signals_equal_their_former_forms(seed: int) -> None:
    for m, d in ((9, 84), (9, 7), (9, 1), (0, 84)):
        hourly, weekday = _fleet(seed, max(m, 9), d)
        hourly = hourly[:m]
        new, old = sg.profile_change(hourly, weekday), _profile_change_former(hourly, weekday)
        for name in ("corr", "flatness", "start", "end", "score", "usual", "during", "reversed", "flattened"):
            assert _same(getattr(new, name), getattr(old, name)), name
        assert _same(sg.reversed_weeks(hourly), _reversed_weeks_former(hourly))
        assert _same(
            sg.reversed_weeks(hourly, reference=3, week=2), _reversed_weeks_former(hourly, reference=3, week=2)
        )
        assert _same(sg.usual_hour_profile(hourly, weekday), _usual_hour_profile_former(hourly, weekday))

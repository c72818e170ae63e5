"""A small hand-built fleet: honest meters, one thief per signal, and honest faulty distractors.

Two transformers (A and B) of 20 residential customers each, 120 days from 2026-01-05 (a Monday),
hourly profiles. Each feeder measures its customers' *true* consumption plus 4 % technical loss,
so theft (recorded < true) shows in the balance and a vacancy (true falls too) does not.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np

from analytics.theft.data import Event, TheftData

START = date(2026, 1, 5)
DAYS = 120
SHAPE = np.array(
    [
        0.3,
        0.25,
        0.2,
        0.2,
        0.25,
        0.4,
        0.8,
        1.4,
        1.2,
        0.8,
        0.7,
        0.7,
        0.8,
        0.7,
        0.6,
        0.6,
        0.8,
        1.2,
        1.8,
        2.0,
        1.7,
        1.3,
        0.9,
        0.5,
    ]
)
SHAPE = SHAPE / SHAPE.sum()

#: serial -> what was done to it
THIEVES = {
    "A01": "tamper_drop",  # cover open on day 40, then 30 % of true
    "A02": "meter_stopped",  # zero from day 50 to 90 while reporting
    "A03": "reverse_energy",  # 70 % of true counted on the export register from day 30
    "B01": "flat_profile",  # recorded = mean(day) from day 60 (same daily total)
    "B02": "bypass",  # 50 % of true from day 20 to 100, no event
    "B03": "reversed_profile",  # day profile reversed from day 45
}
HONEST_FAULTY = {
    "A10": "vacancy",  # 8 % of normal (true and recorded) days 40-75
    "A11": "frozen_register",  # register stuck days 60-66, then catches up
    "B10": "comm_loss",  # silent days 30-37, the register catches up
    "B11": "rollover",  # 16-bit counter of 0.1 kWh wraps on day 70
    "B12": "scale_jump",  # register ×10 days 80-84
}


def build(seed: int = 3) -> tuple[TheftData, FloatArrayLike]:
    """The fleet and its true daily consumption (meters × days)."""
    rng = np.random.default_rng(seed)
    serials = [f"{a}{k:02d}" for a in "AB" for k in range(1, 21)]
    m = len(serials)
    level = 9.0 * rng.lognormal(0, 0.25, m)
    season = 1.0 + 0.2 * np.cos(np.arange(DAYS) / 365 * 2 * np.pi)
    true_h = level[:, None, None] * season[None, :, None] * SHAPE[None, None, :] * rng.lognormal(0, 0.1, (m, DAYS, 24))
    rec_h = true_h.copy()
    exp_d = np.zeros((m, DAYS))
    events: list[Event] = []
    idx = {s: i for i, s in enumerate(serials)}
    d = np.arange(DAYS)

    def ev(serial: str, day: int, kind: str, code: int) -> None:
        ts = datetime(START.year, START.month, START.day, 2, 0, tzinfo=UTC) + timedelta(days=day)
        events.append(Event(idx[serial], day, ts, kind, code))

    i = idx["A01"]
    rec_h[i, 40:] *= 0.3
    ev("A01", 37, "terminal_cover_open", 40)
    ev("A01", 37, "terminal_cover_closed", 41)
    i = idx["A02"]
    rec_h[i, 50:90] = 0.0
    i = idx["A03"]
    exp_d[i, 30:] = 0.7 * true_h[i, 30:].sum(axis=1)
    rec_h[i, 30:] *= 0.3
    i = idx["B01"]
    rec_h[i, 60:] = rec_h[i, 60:].mean(axis=1, keepdims=True)
    i = idx["B02"]
    rec_h[i, 20:100] *= 0.5
    i = idx["B03"]
    rec_h[i, 45:] = rec_h[i, 45:, ::-1]
    i = idx["A10"]
    true_h[i, 40:75] *= 0.08
    rec_h[i, 40:75] *= 0.08

    rec_d = rec_h.sum(axis=2)
    # Register as the meter shows it, read at the end of each day.
    index = 1000.0 + np.cumsum(rec_d, axis=1)
    shown = index.copy()
    i = idx["A11"]
    shown[i, 60:66] = index[i, 59]
    i = idx["B10"]
    shown[i, 30:37] = np.nan
    i = idx["B11"]
    wrap = np.full(m, np.inf)
    wrap[i] = 6553.6
    shown[i] = index[i] - 1000.0 + (6553.6 - rec_d[i, :70].sum() - 3.0)
    shown[i] = np.mod(shown[i], 6553.6)
    i = idx["B12"]
    shown[i, 80:85] *= 10
    prev = np.concatenate([np.full((m, 1), np.nan), shown[:, :-1]], axis=1)
    prev[idx["B11"], 0] = np.nan
    daily = shown - prev
    # Days after a silent run are measured from the last read before it.
    i = idx["B10"]
    daily[i, 37] = shown[i, 37] - shown[i, 29]
    daily[:, 0] = rec_d[:, 0]
    daily[idx["B11"], 0] = rec_d[idx["B11"], 0]
    hourly = rec_h.copy()
    hourly[idx["B10"], 30:37] = np.nan

    data = TheftData.blank(serials, START, daily)
    data.cumulative = True
    data.area = np.array([s[0] for s in serials], dtype=object)
    data.customer_class = np.full(m, "residential", dtype=object)
    data.latitude = np.asarray(48.85 + 0.001 * np.arange(m), dtype=np.float64)
    data.longitude = np.asarray(2.35 + 0.001 * (np.arange(m) % 7), dtype=np.float64)
    data.wrap = wrap
    data.export = exp_d
    data.hourly = hourly
    data.events = events
    true_d = true_h.sum(axis=2)
    for area in "AB":
        rows = [k for k, s in enumerate(serials) if s[0] == area]
        data.feeders[area] = true_d[rows].sum(axis=0) * 1.04
    del d
    return data, true_d


FloatArrayLike = np.ndarray

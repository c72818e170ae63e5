"""Consumption shapes: daily and weekly load profiles, seasonality and noise, vectorised with numpy.

Three customer classes share one representation: a table ``templates[class, daytype, slot]`` of
relative load per interval slot of the day, normalised so that the mean over a week is 1. A meter's
consumption in one interval is then ``daily / slots_per_day * template * season * noise``.

Day types: 0 weekday, 1 Saturday, 2 Sunday. Classes: 0 residential, 1 commercial, 2 water.
"""

from __future__ import annotations

import numpy as np

from releve.arrays import FloatArray

RESIDENTIAL, COMMERCIAL, WATER = 0, 1, 2
CLASS_NAMES = ("residential", "commercial", "water")


def _bump(hours: FloatArray, centre: float, width: float) -> FloatArray:
    return np.exp(-0.5 * ((hours - centre) / width) ** 2)


def _plateau(hours: FloatArray, start: float, end: float, edge: float = 0.5) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-(hours - start) / edge)) - 1.0 / (1.0 + np.exp(-(hours - end) / edge))


def day_templates(slots_per_day: int) -> FloatArray:
    """Return ``templates[class, daytype, slot]``: relative load, weekly mean 1 per class."""
    hours = (np.arange(slots_per_day) + 0.5) * 24.0 / slots_per_day
    out = np.empty((3, 3, slots_per_day))
    # Residential: night base, morning and evening peaks; weekends later and flatter.
    weekday = 0.35 + 0.8 * _bump(hours, 7.3, 1.0) + 0.25 * _bump(hours, 13.0, 1.5) + 1.6 * _bump(hours, 19.7, 2.0)
    weekend = 0.38 + 0.7 * _bump(hours, 9.5, 1.6) + 0.55 * _bump(hours, 13.0, 2.0) + 1.5 * _bump(hours, 19.5, 2.2)
    out[RESIDENTIAL] = [weekday, weekend, weekend * 1.05]
    # Commercial: business hours on weekdays, half a day on Saturday, closed on Sunday.
    base = 0.25 + 0.05 * _bump(hours, 3.0, 2.0)
    out[COMMERCIAL] = [
        base + 2.4 * _plateau(hours, 8.0, 18.5),
        base + 1.2 * _plateau(hours, 9.0, 13.0),
        base,
    ]
    # Water: a night minimum close to zero, a sharp morning and a broad evening peak.
    water = 0.04 + 2.6 * _bump(hours, 7.0, 0.9) + 0.5 * _bump(hours, 12.5, 1.5) + 1.7 * _bump(hours, 19.5, 1.6)
    water_weekend = 0.04 + 2.0 * _bump(hours, 9.0, 1.3) + 0.8 * _bump(hours, 13.0, 2.0) + 1.6 * _bump(hours, 19.5, 1.7)
    out[WATER] = [water, water_weekend, water_weekend]
    week_weights = np.array([5.0, 1.0, 1.0]) / 7.0
    for cls in range(3):
        mean = float((out[cls].mean(axis=1) * week_weights).sum())
        out[cls] /= mean
    return out


def season_factor(day_of_year: FloatArray, amplitude: FloatArray, peak_day: FloatArray) -> FloatArray:
    """Return ``1 + amplitude * cos(2π (doy - peak) / 365.25)``, broadcasting meters × steps."""
    return 1.0 + amplitude * np.cos(2.0 * np.pi * (day_of_year - peak_day) / 365.25)


def lognormal_noise(z: FloatArray, sigma: float) -> FloatArray:
    """Return mean-one log-normal multiplicative noise from standard normals ``z``."""
    result: FloatArray = np.exp(sigma * z - 0.5 * sigma * sigma)
    return result

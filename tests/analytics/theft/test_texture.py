"""The half-hour texture (:func:`analytics.theft.data.interval_texture`) and its before/after test,
on hand-built half-hourly households with real-looking noise (see :func:`half_hours`)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

from analytics.theft import model as md
from analytics.theft.data import TheftData, interval_texture, read_long
from analytics.theft.features import compute_features


def half_hours(m: int, d: int, seed: int = 0) -> np.ndarray:
    """Meters × days × 48 kWh: a base load, morning and evening blocks that last several
    half-hours, appliance runs (kettle, oven, washing machine) and lognormal noise per interval."""
    rng = np.random.default_rng(seed)
    slot = np.arange(48) / 2
    out = np.empty((m, d, 48))
    level = rng.lognormal(np.log(0.25), 0.4, m)
    for i in range(m):
        morning, evening = rng.uniform(6.5, 8.5), rng.uniform(17.5, 20.5)
        for j in range(d):
            shift = rng.normal(0, 1.0)
            shape = (
                0.3
                + np.exp(-0.5 * ((slot - morning - shift) / 1.0) ** 2)
                + 1.5 * np.exp(-0.5 * ((slot - evening - shift) / 1.6) ** 2)
            )
            x = level[i] * rng.lognormal(0, 0.25) * shape / shape.mean() * rng.lognormal(0, 0.12, 48)
            for _ in range(rng.integers(1, 4)):  # appliance runs of 1–4 half-hours
                a = rng.integers(0, 48)
                x[a : a + rng.integers(1, 5)] += rng.uniform(0.3, 1.0)
            out[i, j] = x
    return out


def test_random_scaling_per_half_hour_roughens_the_texture_a_lower_level_does_not():
    rec = half_hours(6, 40, seed=3)
    honest = interval_texture(rec)
    assert honest.shape == (6, 40) and np.isfinite(honest).all()
    rng = np.random.default_rng(4)
    scaled = interval_texture(rec * rng.uniform(0.1, 0.8, rec.shape))  # h3: each half-hour its own share
    halved = interval_texture(rec * 0.5)  # a household using half as much, same shape
    assert np.median(scaled) > 2.5 * np.median(honest)
    assert (scaled.mean(axis=1) > honest.mean(axis=1) + 0.2).all()
    np.testing.assert_allclose(halved.mean(axis=1), honest.mean(axis=1), rtol=0.25)  # level barely matters
    hourly = rec.reshape(6, 40, 24, 2).sum(axis=3)
    hourly_scaled = (rec * rng.uniform(0.1, 0.8, rec.shape)).reshape(6, 40, 24, 2).sum(axis=3)
    # The same statistic on hours sees much less of it: the reason it is read at the finest resolution.
    assert np.median(interval_texture(hourly_scaled)) / np.median(interval_texture(hourly)) < np.median(
        scaled
    ) / np.median(honest)
    gap = rec.copy()
    gap[2, 5, 17] = np.nan
    assert np.isnan(interval_texture(gap)[2, 5]) and np.isfinite(interval_texture(gap)[2, 6])


def test_long_reader_computes_the_texture_of_its_intervals(tmp_path: Path):
    rec = half_hours(2, 3, seed=5)
    start = datetime(2026, 1, 1)
    lines = ["meter,timestamp,value"]
    for i in range(2):
        for j in range(3):
            for k in range(48):
                if (i, j, k) == (1, 2, 30):
                    continue  # a missing half-hour: that day has no texture
                ts = start + timedelta(days=j, minutes=30 * k)
                lines.append(f"M{i},{ts.isoformat()},{rec[i, j, k]:.6f}")
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines[:1] + lines[:0:-1]) + "\n")  # rows in any order
    data = read_long(path)
    assert data.texture is not None and data.texture.shape == (2, 3)
    want = interval_texture(np.round(rec, 6))
    a, b = data.serials.index("M0"), data.serials.index("M1")
    np.testing.assert_allclose(data.texture[a], want[0], rtol=1e-9)
    np.testing.assert_allclose(data.texture[b, :2], want[1, :2], rtol=1e-9)
    assert np.isnan(data.texture[b, 2])


def test_a_recent_rougher_texture_counts_with_a_fall_of_the_level_against_the_fleet():
    m, d = 30, 140
    rec = half_hours(m, d, seed=7)
    rng = np.random.default_rng(8)
    rec[3, d - 40 :] *= rng.uniform(0.1, 0.8, (40, 48))  # random scaling per half-hour, last 40 days
    rec[8, d - 40 :] *= 0.5  # a fall of the level with the same texture
    rec[12, d - 40 :] = rec[12, d - 40 :] * rng.uniform(0.7, 1.4, (40, 48))  # rougher, level kept
    data = TheftData.blank([f"M{i}" for i in range(m)], date(2026, 1, 1), rec.sum(axis=2))
    data.hourly = rec.reshape(m, d, 24, 2).sum(axis=3)
    data.texture = interval_texture(rec)
    f = compute_features(data)
    z = f.col("recent_texture_z")
    assert z[3] > 6 and z[3] == z.max()
    assert abs(z[8]) < 3  # the level fell, the texture did not move
    assert np.delete(z, [3, 12]).max() < 4
    ev = md.evidence(f)
    tex = ev.values[:, ev.names.index("texture")]
    assert tex[3] > 0.5
    assert tex[12] < 0.1  # rougher without a fall: the fleet's own variability, not counted
    assert np.delete(tex, 3).max() < 0.1
    # With a feeder the balance sees the missing energy itself: the texture counts without one.
    data.area[:] = "A"
    data.feeders["A"] = np.nansum(data.daily, axis=0) * 1.05
    fed = md.evidence(compute_features(data))
    assert (fed.values[:, fed.names.index("texture")] == 0).all()
    without = TheftData.blank(data.serials, data.first_day, data.daily)
    assert (compute_features(without).col("recent_texture_z") == 0).all()

"""Tamper marks (exact zeros on normal days, flat days, a repeated ceiling) on hand-built households
with real-looking noise: irregular peaky days (:func:`households`), read to the watt-hour as real
meters report, one household whose tiny night load reads as honest zeros, and a vacancy."""

from __future__ import annotations

import numpy as np

from analytics.theft import signals as sg
from tests.analytics.theft.test_interval_signals import households

ZEROED, FLAT, CEILING = (sg.MARKS.index(n) for n in ("zeroed", "flat", "ceiling"))


def _fleet(m: int = 24, d: int = 168, seed: int = 11) -> np.ndarray:
    true = households(m, d, seed=seed)
    true[1, :, :6] = np.random.default_rng(seed).uniform(0, 0.0012, (d, 6))  # a tiny night load
    true[2, 60:100] = np.minimum(true[2, 60:100], 0.05)  # away for 40 days (vacancy)
    return true


def _read(x: np.ndarray) -> np.ndarray:
    """What a meter reports: watt-hours."""
    return np.round(x, 3)


def _contrast(rec: np.ndarray) -> np.ndarray:
    marks = sg.tamper_marks(_read(rec))
    return np.column_stack([sg.run_contrast(sg.weekly_means(marks[:, j]))[0] for j in range(len(sg.MARKS))])


def test_honest_households_carry_no_tamper_mark():
    c = _contrast(_fleet())
    assert c.max() < 0.3  # night zeros of a tiny load, a vacancy's low days and watt-hour repeats included


def test_zero_windows_and_a_cut_off_leave_the_zeroed_mark_from_their_start():
    rec = _fleet()
    rng = np.random.default_rng(2)
    for day in range(70, 168):  # h2: a window of 5–9 hours recorded as zero every day
        start, n = int(rng.integers(0, 24)), int(rng.integers(5, 10))
        rec[5, day, (start + np.arange(n)) % 24] = 0.0
    cut = np.quantile(rec[8], 0.6)
    rec[8, 84:] = np.where(rec[8, 84:] < cut, 0.0, rec[8, 84:])  # zero below a cut-off
    c = _contrast(rec)
    assert c[5, ZEROED] > 0.8 and c[8, ZEROED] > 0.7  # the evidence counts a mark fully from 0.7
    assert np.delete(c[:, ZEROED], [5, 8]).max() < 0.3
    marks = sg.tamper_marks(_read(rec))
    _, w0, _ = sg.run_contrast(sg.weekly_means(marks[:, ZEROED]))
    assert w0[5] == 10 and w0[8] == 12  # weeks of the starts (days 70 and 84)


def test_a_flattened_day_is_flat_and_a_capped_peak_is_a_ceiling():
    rec = _fleet()
    rec[6, 56:112] = rec[6, 56:112].mean(axis=1, keepdims=True)  # h5
    cap = np.quantile(rec[9], 0.75)
    rec[9, 98:] = np.minimum(rec[9, 98:], cap)  # peaks clipped at one figure
    c = _contrast(rec)
    assert c[6, FLAT] > 0.9 and c[9, CEILING] > 0.6
    assert np.delete(c[:, FLAT], 6).max() < 0.1
    assert np.delete(c[:, CEILING], 9).max() < 0.1
    # A scaled-down household (h1) leaves none: its values are still a household's.
    rec2 = _fleet()
    rec2[4, 84:] *= 0.4
    assert _contrast(rec2)[4].max() < 0.3


def test_a_mark_present_all_year_contrasts_with_nothing():
    rec = _fleet()
    rec[7] = rec[7].mean(axis=1, keepdims=True)  # flat from the first day to the last
    assert _contrast(rec)[7, FLAT] < 0.4  # where the evidence starts counting a mark


def test_the_most_repeated_value_and_its_runner_up_are_counted_per_row():
    x = np.array([[1.0, 2.0, 2.0, 3.0, 3.0, 3.0, np.nan, np.nan], [np.nan] * 8])
    top, count, second = sg._top_repeat(x)
    assert top[0] == 3.0 and count[0] == 3 and second[0] == 2
    assert np.isnan(top[1]) and count[1] == 0


def test_without_a_feeder_a_full_mark_outranks_any_series_evidence():
    from analytics.theft import model as md

    names = md.EVIDENCE
    values = np.zeros((3, len(names)))
    for n in ("drop", "profile", "change", "fell", "flat_run"):
        values[0, names.index(n)] = 1.0  # everything a household's own series can show
    values[1, names.index("marks")] = 1.0  # one footprint real load does not leave
    values[2] = values[0]
    ceiling = np.array([md.NO_FEEDER_CEILING, md.NO_FEEDER_CEILING, 1.0])  # the third has a feeder
    rule = md.rule_score(md.Evidence(names, values, ceiling))
    assert rule[0] <= md.NO_FEEDER_CEILING < rule[1]
    assert rule[2] > 0.99  # with a feeder confirming it (the gate lives in evidence()), no ceiling

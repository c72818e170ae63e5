"""Theft ranking on real household load (Low Carbon London, 2013) against two simple baselines.

    RELEVE_REAL_LOAD=/path/to/csvs .venv/bin/python bench/theft_real.py          # 3 scenarios, seeds 1–3
    RELEVE_REAL_LOAD=/path/to/csvs .venv/bin/python bench/theft_real.py --seeds 1
    RELEVE_REAL_LOAD=/path/to/csvs .venv/bin/python bench/theft_real.py --first-seed 4 --seeds 2   # held out

The load is real: the half-hourly readings of ≈ 325 London households (UK Power Networks, Low Carbon
London, 2013; one CSV per household, ``LCLid,tstp,energy(kWh/hh)``), published in the GitHub
repositories Ryanhilde/meter_readings, Ryanhilde/meter_readings_2 and Ryanhilde/meter_reading_3.
Clone them and point ``RELEVE_REAL_LOAD`` at a folder holding all the CSVs (never commit them).

Per seed: households (≥ 90 % of their half-hours present) are shuffled into areas of 10–30. About
12 % become thieves, one attack each, injected here by seeded code (the literature's attack families:
Jokar et al. 2016, Zheng et al. 2018): ``h1`` scaling, ``h2`` zero windows, ``h3`` random scaling per
interval, ``h4`` random share of the daily mean per interval, ``h5`` flattened to the daily mean,
``h6`` reversed day, ``cutoff`` zeroing below a cut-off, ``cap`` peaks clipped, ``progressive``,
``intermittent`` (on/off weeks) and ``first_day`` (scaling running when the data starts). Honest
distractors: vacancies, a new appliance (night charging or heating), faulty meters (weeks without
data, an hour's clock shift, scale spikes). A feeder per area measures, per half-hour, the true load
of its households + technical loss (no-load part + I²R on three phases with the households spread
over them, ±8 % noise) + meter noise; the meters record the (attacked) load.

Scenarios: (1) interval feeder totals, attacks from day 45–300; (2) the same without feeders;
(3) every thief steals from the first day (the attack kinds above, as they were from the start), with
interval feeders. Printed per attack type and overall: precision@k (k = thieves), MAP@100, ROC AUC,
for Relevé (``analytics.theft.ranking.score``, the function ``releve theft rank`` calls, on
arrays laid out as its long-file reader lays them out, incomplete days left out; not through the
database nor the CSV parser) and for two baselines in the same run: (a) relative drop, mean of the
last 30 days against the first 45; (b) coefficient of variation of the daily totals, highest first. Then learning from visits: outcomes of the top 20 re-rank the rest (MAP@100 before → after).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from analytics.theft.data import TheftData, interval_texture
from analytics.theft.ranking import score

HOW_TO_GET = """set RELEVE_REAL_LOAD to a folder with the Low Carbon London household CSVs
(LCLid,tstp,energy(kWh/hh); ≈ 325 files). They are public:
    git clone https://github.com/Ryanhilde/meter_readings
    git clone https://github.com/Ryanhilde/meter_readings_2
    git clone https://github.com/Ryanhilde/meter_reading_3
    mkdir lcl && cp meter_readings*/*.csv meter_reading_3/*.csv lcl/
    RELEVE_REAL_LOAD=$PWD/lcl python bench/theft_real.py"""

YEAR0 = date(2013, 1, 1)
DAYS = 365
SLOTS = 48
ATTACKS = ("h1", "h2", "h3", "h4", "h5", "h6", "cutoff", "cap", "progressive", "intermittent", "first_day")
CACHE = Path(os.environ.get("TMPDIR", "/tmp")) / "releve_lcl_cache.npz"


def load_real(folder: Path) -> tuple[list[str], np.ndarray]:
    """Households × days × 48 half-hours (kWh, NaN missing), cached as .npz beside the temp files."""
    files = sorted(p for p in folder.rglob("*.csv") if p.is_file())
    if CACHE.exists():
        z = np.load(CACHE, allow_pickle=False)
        if int(z["n_files"]) == len(files):
            return list(z["ids"]), z["load"]
    ids: list[str] = []
    rows: list[np.ndarray] = []
    for p in files:
        arr = np.full(DAYS * SLOTS, np.nan)
        with p.open() as fh:
            header = fh.readline()
            if not header.startswith("LCLid"):
                continue
            hid = ""
            for line in fh:
                parts = line.split(",")
                if len(parts) < 3:
                    continue
                hid = parts[0]
                ts = parts[1]
                try:
                    d = date(int(ts[0:4]), int(ts[5:7]), int(ts[8:10]))
                    v = float(parts[2])
                except ValueError:
                    continue
                k = (d - YEAR0).days * SLOTS + int(ts[11:13]) * 2 + (int(ts[14:16]) >= 30)
                if 0 <= k < arr.size:
                    arr[k] = v
        if hid:
            ids.append(hid)
            rows.append(arr.reshape(DAYS, SLOTS))
    load = np.stack(rows)
    np.savez(CACHE, ids=np.array(ids), load=load, n_files=len(files))
    return ids, load


@dataclass
class Case:
    """One injected fleet: what the meters record, the feeders, and the truth."""

    recorded: np.ndarray  # meters × days × 48
    feeders: dict[str, np.ndarray]  # area → days × 48
    area: np.ndarray
    kind: np.ndarray  # attack kind, "" honest
    distractor: np.ndarray  # "vacancy", "appliance", "fault:…", ""
    serials: list[str]
    true: np.ndarray  # what the households drew (meters × days × 48)


def _fill(load: np.ndarray) -> np.ndarray:
    """The true load where the meter missed a half-hour: that household's mean for the slot and weekday type."""
    true = load.copy()
    wd = (YEAR0.weekday() + np.arange(DAYS)) % 7 >= 5
    for t in (False, True):
        cols = np.flatnonzero(wd == t)
        mean = np.nanmean(load[:, cols, :], axis=1)
        sub = true[:, cols, :]
        holes = ~np.isfinite(sub)
        sub[holes] = np.broadcast_to(mean[:, None, :], sub.shape)[holes]
        true[:, cols, :] = sub
    return np.nan_to_num(true)


def attack(rng: np.random.Generator, x: np.ndarray, kind: str, s: int, e: int) -> np.ndarray:
    """The load a tampered meter records over days [s, e) (``x`` days × 48, the true load)."""
    y = x.copy()
    seg = x[s:e]
    n = e - s
    if kind in ("h1", "first_day"):
        y[s:e] = seg * rng.uniform(0.2, 0.8)
    elif kind == "h2":
        start = rng.integers(0, SLOTS, n)
        length = rng.integers(8, 20)
        slot = np.arange(SLOTS)
        off = ((slot[None, :] - start[:, None]) % SLOTS) < length
        y[s:e] = np.where(off, 0.0, seg)
    elif kind == "h3":
        y[s:e] = seg * rng.uniform(0.1, 0.8, seg.shape)
    elif kind == "h4":
        y[s:e] = seg.mean(axis=1, keepdims=True) * rng.uniform(0.1, 0.8, seg.shape)
    elif kind == "h5":
        y[s:e] = np.broadcast_to(seg.mean(axis=1, keepdims=True), seg.shape)
    elif kind == "h6":
        y[s:e] = seg[:, ::-1]
    elif kind == "cutoff":
        cut = np.quantile(x, rng.uniform(0.5, 0.8))
        y[s:e] = np.where(seg < cut, 0.0, seg)
    elif kind == "cap":
        cap = np.quantile(x, rng.uniform(0.6, 0.85))
        y[s:e] = np.minimum(seg, cap)
    elif kind == "progressive":
        alpha = np.linspace(1.0, rng.uniform(0.2, 0.5), n)
        y[s:e] = seg * alpha[:, None]
    elif kind == "intermittent":
        weeks = (np.arange(n) // 7) % 2 == 0
        y[s:e] = np.where(weeks[:, None], seg * rng.uniform(0.1, 0.5), seg)
    return y


def build_case(ids: list[str], load: np.ndarray, seed: int, scenario: str) -> Case:
    """Areas, thieves, distractors and feeders for one seed and scenario."""
    rng = np.random.default_rng(seed * 1000 + {"feeders": 1, "nofeeders": 1, "firstday": 3}[scenario])
    m = load.shape[0]
    order = rng.permutation(m)
    load = load[order]
    serials = [ids[i] for i in order]
    true = _fill(load)
    area = np.empty(m, dtype=object)
    k = 0
    a = 0
    while k < m:
        size = int(rng.integers(10, 31))
        if m - k - size < 10:
            size = m - k
        area[k : k + size] = f"A{a:02d}"
        k += size
        a += 1
    kind = np.full(m, "", dtype=object)
    distractor = np.full(m, "", dtype=object)
    n_thieves = round(0.12 * m)
    picks = rng.permutation(m)
    thieves, rest = picks[:n_thieves], picks[n_thieves:]
    recorded = load.copy()
    for j, i in enumerate(thieves):
        kd = ATTACKS[j % len(ATTACKS)]
        kind[i] = kd
        if scenario == "firstday" or kd == "first_day":
            s, e = 0, DAYS
        else:
            s = int(rng.integers(45, 300))
            e = DAYS if rng.random() < 0.6 else min(DAYS, s + int(rng.integers(60, 200)))
        att = attack(rng, true[i], kd, s, e)
        recorded[i] = np.where(np.isfinite(load[i]), att, np.nan)
    # Honest distractors: the feeder sees what the meter sees (no energy goes missing).
    n_d = round(0.05 * m)
    for j, i in enumerate(rest[: 3 * n_d]):
        what = ("vacancy", "appliance", "fault")[j % 3]
        s = int(rng.integers(30, 320))
        e = min(DAYS, s + int(rng.integers(20, 90)))
        if what == "vacancy":
            base = np.quantile(true[i], 0.1)
            true[i, s:e] = np.minimum(true[i, s:e], base) * rng.uniform(0.8, 1.2, (e - s, SLOTS))
            recorded[i, s:e] = np.where(np.isfinite(load[i, s:e]), true[i, s:e], np.nan)
            distractor[i] = "vacancy"
        elif what == "appliance":
            extra = np.zeros((DAYS, SLOTS))
            hours = slice(2, 12) if rng.random() < 0.5 else slice(12, 44)
            extra[s:, hours] = rng.uniform(0.3, 1.0)
            true[i] += extra
            recorded[i] = np.where(np.isfinite(load[i]), recorded[i] + extra, np.nan)
            distractor[i] = "appliance"
        else:
            fault = ("gap", "clock", "spike")[int(rng.integers(0, 3))]
            if fault == "gap":
                recorded[i, s:e] = np.nan
            elif fault == "clock":
                recorded[i, s:e] = np.roll(recorded[i, s:e].reshape(-1), 2).reshape(e - s, SLOTS)
            else:
                hit = rng.random((DAYS, SLOTS)) < 0.002
                recorded[i] = np.where(hit, recorded[i] * 10, recorded[i])
            distractor[i] = f"fault:{fault}"
    feeders: dict[str, np.ndarray] = {}
    if scenario != "nofeeders":
        for code in sorted(set(area)):
            rows = np.flatnonzero(area == code)
            phase = rng.integers(0, 3, rows.size)
            total = true[rows].sum(axis=0)
            i2r = np.zeros((DAYS, SLOTS))
            for p in range(3):
                pl = true[rows[phase == p]].sum(axis=0)
                i2r += pl**2
            k_cu = rng.uniform(0.02, 0.05) / max(float(np.mean(total)), 1e-9) * 3
            no_load = rng.uniform(0.005, 0.012) * float(np.mean(total))
            loss = (no_load + k_cu * i2r) * rng.normal(1.0, 0.08, (DAYS, SLOTS))
            feeders[code] = total + loss + rng.normal(0, 0.002 * float(np.mean(total)), (DAYS, SLOTS))
    return Case(recorded, feeders, area, kind, distractor, serials, true)


def to_theft_data(case: Case) -> TheftData:
    """Arrays laid out as ``read_long`` (+ ``--areas``, ``--feeders``) lays them out: days, hours, feeders.

    Days with a missing half-hour are left out (NaN) rather than summed short.
    """
    m = case.recorded.shape[0]
    hh = case.recorded.reshape(m, DAYS, 24, 2)
    hourly = np.where(np.isfinite(hh).all(axis=3), hh.sum(axis=3), np.nan)
    complete = np.isfinite(case.recorded).all(axis=2)
    daily = np.where(complete, np.nansum(case.recorded, axis=2), np.nan)
    data = TheftData.blank(case.serials, YEAR0, daily)
    data.hourly = np.where(complete[:, :, None], hourly, np.nan)
    data.texture = interval_texture(case.recorded)
    data.area = case.area.copy()
    data.customer_class = np.full(m, "residential", dtype=object)
    for code, series in case.feeders.items():
        data.feeders[code] = series.sum(axis=1)
        data.feeders_hourly[code] = series.reshape(DAYS, 24, 2).sum(axis=2)
    return data


# ---------------------------------------------------------------------------------------- metrics


def ap_at(y: np.ndarray, order: np.ndarray, k: int = 100) -> float:
    """Average precision over the top ``k`` (normalised by min(k, positives))."""
    rel = y[order[:k]].astype(float)
    if not rel.any():
        return 0.0
    prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float((prec * rel).sum() / min(k, int(y.sum())))


def metrics(y: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    """precision@k (k = positives), MAP@100, ROC AUC of scores ``s`` (higher = more suspicious)."""
    order = np.argsort(-s, kind="stable")
    k = int(y.sum())
    p = float(y[order[:k]].mean()) if k else float("nan")
    auc = float(roc_auc_score(y, s)) if 0 < k < len(y) else float("nan")
    return p, ap_at(y, order), auc


def baseline_drop(daily: np.ndarray) -> np.ndarray:
    """(a) relative drop: 1 − mean(last 30 days) / mean(first 45 days)."""
    first = np.nanmean(daily[:, :45], axis=1)
    last = np.nanmean(daily[:, -30:], axis=1)
    return np.nan_to_num(1.0 - last / np.where(first > 0, first, np.nan))


def baseline_cv(daily: np.ndarray) -> np.ndarray:
    """(b) coefficient of variation of the daily totals, highest first."""
    return np.nan_to_num(np.nanstd(daily, axis=1) / np.maximum(np.nanmean(daily, axis=1), 1e-9))


METHODS = ("Relevé", "drop", "CV")


def run(
    ids: list[str], load: np.ndarray, seeds: list[int], scenario: str, feedback: bool
) -> tuple[dict[str, dict[str, list]], list[tuple[float, float]]]:
    """Per method and attack type, the (y, score) rows pooled over seeds; and feedback figures."""
    pooled: dict[str, dict[str, list]] = {m: {} for m in METHODS}
    fb: list[tuple[float, float]] = []
    for seed in seeds:
        case = build_case(ids, load, seed, scenario)
        data = to_theft_data(case)
        t0 = time.perf_counter()
        r = score(data)
        took = time.perf_counter() - t0
        scores = {"Relevé": r.risk, "drop": baseline_drop(data.daily), "CV": baseline_cv(data.daily)}
        y = case.kind != ""
        p, ap, auc = metrics(y, r.risk)
        top = r.order()[: int(y.sum())]
        fp = [case.distractor[i] or "honest" for i in top if not y[i]]
        print(
            f"  seed {seed}: {data.n_meters} meters, {len(set(case.area))} areas, {int(y.sum())} thieves; "
            f"Relevé ranked in {took:.1f} s: precision@k {p:.3f} MAP@100 {ap:.3f} AUC {auc:.3f}; "
            f"honest in top k: {', '.join(sorted(fp)) or 'none'}"
        )
        for name, s in scores.items():
            for kd in ("overall", *ATTACKS):
                sel = y if kd == "overall" else (case.kind == kd)
                rows = sel | ~y
                pooled[name].setdefault(kd, []).append((sel[rows], s[rows]))
        if feedback:
            k = 20
            order = r.order()
            visited = order[:k]
            labels = y[visited].astype(int)
            r2 = score(data, training=(r.inputs()[visited], labels))
            rest = np.ones(len(y), dtype=bool)
            rest[visited] = False
            before = ap_at(y[rest], np.argsort(-r.risk[rest], kind="stable"))
            after = ap_at(y[rest], np.argsort(-r2.risk[rest], kind="stable"))
            model = "none (too few labels)" if r2.model is None else r2.model.describe()
            print(
                f"    feedback: top {k} visited ({labels.sum()} fraud); model {model}; MAP@100 of the remaining "
                f"list {before:.3f} → {after:.3f}"
            )
            fb.append((before, after))
    return pooled, fb


def table(pooled: dict[str, dict[str, list]]) -> list[str]:
    """Rows: attack type; per method precision@k / MAP@100 / AUC."""
    lines = [f"    {'attack':<13}{'n':>4}  " + "  ".join(f"{m + ' p@k/MAP/AUC':>24}" for m in METHODS)]
    for kd in ("overall", *ATTACKS):
        cells = []
        n = 0
        for mth in METHODS:
            if kd == "overall":  # per seed, then the mean: each seed's list is one night's list
                vals = np.array([metrics(y, s) for y, s in pooled[mth][kd]])
                p, ap, auc = np.nanmean(vals, axis=0)
            else:  # a few thieves of a kind per seed: pooled over seeds (scores are comparable)
                p, ap, auc = metrics(
                    np.concatenate([y for y, _ in pooled[mth][kd]]), np.concatenate([s for _, s in pooled[mth][kd]])
                )
            n = int(sum(int(y.sum()) for y, _ in pooled[mth][kd]))
            cells.append(f"{p:>8.3f}{ap:>8.3f}{auc:>8.3f}")
        lines.append(f"    {kd:<13}{n:>4}  " + "  ".join(cells))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="N seeds per scenario (default 3)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=1,
        help="first seed (default 1; e.g. --first-seed 4 --seeds 2 for held-out seeds 4–5)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=("feeders", "nofeeders", "firstday"),
        help="run only these scenarios (repeatable; default all three)",
    )
    args = parser.parse_args()
    folder = os.environ.get("RELEVE_REAL_LOAD")
    if not folder or not Path(folder).is_dir():
        print(HOW_TO_GET, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    ids, load = load_real(Path(folder))
    keep = np.isfinite(load).mean(axis=(1, 2)) >= 0.9
    ids = [h for h, k in zip(ids, keep, strict=True) if k]
    load = load[keep]
    print(f"{len(ids)} households with ≥ 90 % of 2013's half-hours (read in {time.perf_counter() - t0:.1f} s)")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    names = {
        "feeders": "with interval feeder totals",
        "nofeeders": "without feeders",
        "firstday": "theft from the first day, interval feeder totals",
    }
    for scenario in args.scenario or ("feeders", "nofeeders", "firstday"):
        print(f"\nscenario: {names[scenario]} (seeds {seeds[0]}–{seeds[-1]})")
        pooled, fb = run(ids, load, seeds, scenario, feedback=scenario == "feeders")
        print("\n".join(table(pooled)))
        if fb:
            b, a = np.mean(fb, axis=0)
            print(f"    after outcomes for the top 20: MAP@100 of the remaining list {b:.3f} → {a:.3f} (mean)")
    print(
        "\noverall: mean over seeds of each seed's list; per attack type: that type's thieves against every "
        "honest meter, pooled over seeds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scoring: rule-based evidence, IsolationForest, the supervised model, risk and expected value.

Without labels the risk is the rule-based evidence score (a noisy-OR of the signals, each in
0–1) blended with an IsolationForest anomaly rank over the theft-direction features. Once
inspection outcomes exist, a logistic regression on the features (and the unsupervised scores) is
trained on them, calibrated (sigmoid, or isotonic with enough labels) and blended in with a weight
that grows with the number of labels. Labels come from past inspections of top-ranked meters, not
a random sample: the blend keeps the unsupervised evidence in charge where the labels say little.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from analytics.theft import evidence as table
from analytics.theft.features import Features
from releve.arrays import FloatArray

#: Features IsolationForest sees: the theft direction only (fault markers would make faulty meters
#: look anomalous, which they are, but not thieves).
IFOREST_FEATURES = (
    "drop_depth",
    "drop_days",
    "drop_share",
    "balance_share",
    "zero_run",
    "profile_score",
    "event_score",
    "reverse_share",
    "peer_low",
    "silence_unrecovered",
)

#: Default tariff per unit (currency / kWh, currency / m³) for the expected value of a visit.
DEFAULT_TARIFF = {"electricity": 0.20, "water": 2.0}


@dataclass
class Evidence:
    """Per meter, each evidence component in 0–1 (rows: meters, columns: :attr:`names`)."""

    names: tuple[str, ...]
    values: FloatArray
    #: Per meter, the most the components other than the tamper marks may add up to (1: no limit);
    #: a :class:`~analytics.theft.evidence.Pattern` lifts it.
    ceiling: FloatArray | None = None
    #: Per meter, a factor on the household's own evidence (drop, change, fell …) before the patterns
    #: and the marks join it (1: none): without a feeder, a fall to almost nothing looks like a vacancy.
    damp: FloatArray | None = None

    def col(self, name: str) -> FloatArray:
        """One component."""
        return self.values[:, self.names.index(name)]


#: The evidence components, in the order of :attr:`Evidence.values`'s columns (:mod:`analytics.theft.evidence`).
EVIDENCE: tuple[str, ...] = tuple(c.name for c in table.COMPONENTS)


def evidence(f: Features) -> Evidence:
    """The rule-based evidence components, each in 0–1 (what each shows: :data:`evidence.COMPONENTS`).

    - **drop** (depth × length) and **zero** are scaled by how much of it the area's daily energy
      balance confirms when the area has a feeder (a vacancy's drop is not confirmed: the feeder
      delivered less too);
    - **balance** is the share of the meter's energy the feeder's hourly residual puts on it;
      where it is known it decides: every series signal counts only as far as it confirms it;
    - **change**, **fell** and **flat_run**, with a daily feeder only, count as far as the daily
      balance confirms them; without any feeder **profile** and **drop** need a **change**;
    - **marks** are halved where the hourly balance puts nothing on the meter;
    - a component of one feature and a ramp (event, reverse, silence, vee …) is its entry's
      ramp of that feature.
    """
    depth = table.DROP.ramp(f.col("drop_depth"))
    length = table.DROP.days(f.col("drop_days"))
    has_bal = f.col("has_balance") > 0
    confirm = np.where(
        has_bal, table.DROP.confirmed(table.BALANCE_CONFIRMS(f.col("balance_share"))), table.DROP.unconfirmed
    )
    drop = depth * length * confirm
    zero = table.ZERO.ramp(f.col("zero_run")) * np.where(
        has_bal, table.ZERO.confirmed(table.BALANCE_CONFIRMS(f.col("balance_share"))), table.ZERO.unconfirmed
    )
    profile = table.PROFILE.ramp(f.col("profile_score"))
    # Interval balance: the share of the meter's own energy that the feeder's hourly residual puts
    # on it (a technical-loss crumb is a few %), believed once it stands well above the noise.
    has_iv = f.col("has_interval") > 0
    iv_share = f.col("interval_share")
    above_noise = table.BALANCE.strength(np.log10(np.maximum(f.col("interval_strength"), 1.0)))
    interval = table.BALANCE.ramp(iv_share) * above_noise
    # Where the hourly balance is known it decides: what the meter's own series shows (a drop, a
    # zero run, a profile change) counts only as far as the balance confirms it.
    gate = np.where(has_iv, table.BALANCE.gate(interval), 1.0)
    # Recent change against the same season, calibrated on the fleet (real households are
    # irregular: only what stands out of the fleet's own variability counts).
    change = table.CHANGE.ramp(
        f.col("recent_level_z") + table.CHANGE.shape_weight * np.clip(f.col("recent_shape_z"), 0, None)
    )
    # Without any feeder the meter's own series is all there is; its profile signal fires on many
    # honest households (real days are irregular), so it only weighs with a fleet-calibrated change.
    no_feeder = ~has_bal & ~has_iv
    profile = np.where(no_feeder, profile * table.PROFILE.no_feeder(change), profile)
    drop = np.where(no_feeder, drop * table.DROP.no_feeder(change), drop)
    # With a daily feeder, a change counts as far as the balance confirms it, like the drop.
    floor = table.DROP.confirmed.floor
    change = np.where(has_bal & ~has_iv, change * (confirm - floor), change)
    fell = table.FELL.ramp(f.col("recent_drop"))
    flat_run = table.FLAT_RUN.ramp(f.col("spread_run_z"))
    # Flat days at the meter's base load are a vacancy's, not a flattened register's.
    above_base = table.FLAT_RUN.above_base(f.col("flat_level"))
    vacancy = flat_run * (1.0 - above_base)
    flat_run = flat_run * above_base
    daily_only = has_bal & ~has_iv
    fell = np.where(daily_only, fell * (confirm - floor), fell)
    flat_run = np.where(daily_only, flat_run * (confirm - floor), flat_run)
    drop, zero, profile, change = drop * gate, zero * gate, profile * gate, change * gate
    fell, flat_run = fell * gate, flat_run * gate
    # Patterns of the own series honest load rarely makes: counted like the fall of the level.
    on_off = table.ON_OFF.ramp(f.col("alternate_weeks"))
    reversed_ = table.REVERSED.ramp(f.col("reversed_run"))
    on_off = np.where(daily_only, on_off * (confirm - floor), on_off) * gate
    reversed_ = np.where(daily_only, reversed_ * (confirm - floor), reversed_) * gate
    # Rougher half-hours lately than in the same season before, beyond the fleet's own changes:
    # random scaling per interval. Real households' half-hours change too (a new appliance, a
    # season), so it counts as far as the level fell over the same last 30 days (the scaling
    # takes a share away).
    # With a feeder the balance sees the missing energy itself (with interval feeders the bench's
    # h3 thieves ranked the same with it, 0.556 / 0.668 → 0.556 / 0.667, and the rest moved by a
    # thousandth): it counts without one.
    texture = table.TEXTURE.ramp(f.col("recent_texture_z")) * table.FELL.ramp(f.col("recent_drop"))
    texture = np.where(no_feeder, texture, 0.0)
    # Tamper marks (exact zeros on normal days, flat days, a repeated ceiling) are footprints real
    # load almost never leaves; a run of them counts fully from a 50 % share above the meter's
    # other weeks. The hourly balance only halves them when it puts nothing on the meter.
    mark = table.MARKS.ramp(np.maximum.reduce([f.col(n) for n in table.MARKS.reads]))
    mark = mark * np.where(has_iv, table.MARKS.hourly(interval), 1.0)
    gated = {
        "drop": drop,
        "zero": zero,
        "profile": profile,
        "balance": interval,
        "change": change,
        "fell": fell,
        "flat_run": flat_run,
        "marks": mark,
        "on_off": on_off,
        "reversed": reversed_,
        "texture": texture,
        # Far below the peers: a weak hint, stronger where no feeder says more.
        "peer": table.PEER.ramp(f.col("peer_low")) * np.where(no_feeder, 1.0, table.PEER.with_feeder),
        # Far below the peers and small appliance steps for its level (signal 21): a register scaled
        # since before the data leaves no change point, only these two. Either alone is often an honest
        # small household; a feeder says more where there is one (seeds 1–3 of bench/theft_real.py
        # without feeders, first_day: 0.000 / 0.006 / 0.753 → 0.111 / 0.026 / 0.806; held out the
        # overall top k loses a thief to a small faulty meter, docs/theft.md).
        "small_steps": np.where(
            no_feeder, table.SMALL_STEPS.ramp(np.minimum(f.col("small_steps"), f.col("peer_low"))), 0.0
        ),
    }
    values = np.column_stack(
        [gated[c.name] if c.name in gated else c.ramp(f.col(c.reads[0])) for c in table.COMPONENTS]
    )
    # Without any feeder, everything but the marks comes from the household's own series, which
    # real households change as much as a thief does: together it tops out below a full mark. A
    # fall to almost nothing (deeper than a thief who still wants a plausible bill) is the shape of
    # a vacancy: it counts for less.
    damp = (1.0 - VACANCY_DAMP * VACANCY_DEPTH(f.col("drop_depth"))) * (1.0 - table.FLAT_RUN.vacancy_damp * vacancy)
    # A fall whose largest hourly steps held (the appliances kept their power) is a household using
    # less; a scaled register shrinks its steps with its level (seeds 1–3 of bench/theft_real.py
    # without feeders: 0.629 / 0.676 → 0.695 / 0.718).
    damp = damp * (1.0 - table.STEPS_HELD_DAMP * table.STEPS_HELD(f.col("steps_held")))
    damp = np.where(no_feeder, damp, 1.0)
    return Evidence(EVIDENCE, values, np.where(no_feeder, NO_FEEDER_CEILING, 1.0), damp)


#: Weight of each evidence component in the noisy-OR.
WEIGHTS: dict[str, float] = {c.name: c.weight for c in table.COMPONENTS}


#: Without a feeder, the most the household's own series (drop, change, profile …) can score:
#: below a full tamper mark (0.97), so a footprint no real load leaves comes first.
NO_FEEDER_CEILING = 0.85

#: Without a feeder, how deep a sustained drop starts to look like a vacancy (fully from 95 %) …
VACANCY_DEPTH = table.Ramp(0.8, 0.15)
#: … and how much of the household's own evidence it then takes away.
VACANCY_DAMP = 0.5


def rule_score(ev: Evidence) -> FloatArray:
    """Noisy-OR of the weighted evidence: 1 − Π (1 − wₖ·eₖ).

    With ``ev.ceiling``: the household's own evidence (× ``ev.damp``) and the patterns are joined
    first, under the ceiling (lifted by the strongest pattern), then the tamper marks.
    """
    w = np.array([WEIGHTS[n] for n in ev.names])
    p = ev.values * w[None, :]
    if "marks" not in ev.names or ev.ceiling is None:
        return 1.0 - np.prod(1.0 - p, axis=1)
    j = ev.names.index("marks")
    pattern = [k for k, n in enumerate(ev.names) if isinstance(table.BY_NAME.get(n), table.Pattern)]
    own = [k for k in range(len(ev.names)) if k != j and k not in pattern]
    rest = 1.0 - np.prod(1.0 - p[:, own], axis=1)
    if ev.damp is not None:
        rest = rest * ev.damp
    ceiling = ev.ceiling
    if pattern:
        rest = 1.0 - (1.0 - rest) * np.prod(1.0 - p[:, pattern], axis=1)
        lift = np.array([getattr(table.BY_NAME[ev.names[k]], "lift", 0.0) for k in pattern])
        ceiling = ceiling + (1.0 - ceiling) * (ev.values[:, pattern] * lift[None, :]).max(axis=1)
    return 1.0 - (1.0 - rest * ceiling) * (1.0 - p[:, j])


def iforest_score(f: Features, seed: int = 0) -> FloatArray:
    """IsolationForest anomaly score over the theft-direction features, as a rank in 0–1."""
    m = f.X.shape[0]
    if m < 10:
        return np.zeros(m)
    from sklearn.ensemble import IsolationForest  # scikit-learn is imported when a model runs (≈ 1.3 s)

    cols = [f.names.index(n) for n in IFOREST_FEATURES]
    x = f.X[:, cols]
    forest = IsolationForest(n_estimators=100, max_samples=min(256, m), random_state=seed)
    rng = np.random.default_rng(seed)
    fit_rows = rng.choice(m, size=min(m, 20000), replace=False)
    forest.fit(x[fit_rows])
    raw = -forest.score_samples(x)
    order = raw.argsort(kind="stable")
    rank = np.empty(m)
    rank[order] = np.arange(m) / max(m - 1, 1)
    return rank


def unsupervised_risk(rule: FloatArray, forest: FloatArray, forest_weight: float = 0.1) -> FloatArray:
    """Blend of the rule score and the IsolationForest rank (the rules lead; the forest breaks ties)."""
    return (1.0 - forest_weight) * rule + forest_weight * forest * rule**0.5


@dataclass
class Supervised:
    """A classifier trained on inspection outcomes.

    ``method`` is ``sigmoid`` / ``isotonic`` (a calibrated logistic regression on labelled meters
    of both classes) or ``pu`` (positive-unlabelled: the first campaigns find mostly fraud, so the
    frauds are set against every meter of the fleet as unlabelled background, and the score is
    divided by its mean on the known frauds — Elkan & Noto 2008).
    """

    model: Any
    n_labels: int
    n_positive: int
    method: str
    pu_scale: float = 1.0

    def describe(self) -> str:
        """What ranked and why, in words."""
        neg = self.n_labels - self.n_positive
        if self.method == "pu":
            return (
                f"positive-unlabelled logistic regression on {self.n_labels} outcomes ({self.n_positive} fraud, "
                f"{neg} not): fewer than {MIN_PER_CLASS} of each class, the fleet's uninspected meters "
                "stand in as background"
            )
        return f"calibrated logistic regression ({self.method}) on {self.n_labels} outcomes ({self.n_positive} fraud)"

    @property
    def name(self) -> str:
        """Short name stored with the run."""
        return "blend+pu-logistic" if self.method == "pu" else f"blend+logistic({self.method})"

    def predict(self, x: FloatArray) -> FloatArray:
        """Probability (or, for ``pu``, a score in 0–1) of fraud per row."""
        p = np.asarray(self.model.predict_proba(x)[:, 1])
        return np.clip(p / self.pu_scale, 0.0, 1.0) if self.method == "pu" else p


#: Outcomes of each class the calibrated classifier needs; below it, positive-unlabelled learning.
MIN_PER_CLASS = 5
#: Fraud outcomes positive-unlabelled learning needs.
MIN_PU_POSITIVES = 2


def train_pu(x: FloatArray, y: np.ndarray, background: FloatArray) -> Supervised | None:
    """Positive-unlabelled logistic regression: frauds against labelled non-frauds and the background.

    The background (the fleet's meters, unlabelled) weighs as much in all as twice the frauds, the
    labelled non-frauds one each. ``None`` with fewer than :data:`MIN_PU_POSITIVES` frauds.
    """
    y = np.asarray(y).astype(int)
    pos = int(y.sum())
    if pos < MIN_PU_POSITIVES or background.shape[0] < 10:
        return None
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xs = np.vstack([x, background])
    ys = np.r_[y, np.zeros(background.shape[0], dtype=int)]
    w = np.r_[np.ones(len(y)), np.full(background.shape[0], 2.0 * pos / background.shape[0])]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=2000))
    model.fit(xs, ys, logisticregression__sample_weight=w)
    known = np.asarray(model.predict_proba(x[y == 1])[:, 1])
    scale = float(known.mean()) if known.size and known.mean() > 0 else 1.0
    return Supervised(model, len(y), pos, "pu", scale)


def train_supervised(x: FloatArray, y: np.ndarray, min_per_class: int = MIN_PER_CLASS) -> Supervised | None:
    """Fit the calibrated classifier, or ``None`` with too few labels of either class."""
    y = np.asarray(y).astype(int)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos < min_per_class or neg < min_per_class:
        return None
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    method = "isotonic" if min(pos, neg) >= 100 else "sigmoid"
    cv = min(3, pos, neg)
    base = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, class_weight="balanced", max_iter=2000))
    model = CalibratedClassifierCV(base, method=method, cv=cv)
    model.fit(x, y)
    return Supervised(model, len(y), pos, method)


def combine(unsup: FloatArray, sup: FloatArray | None, n_labels: int) -> FloatArray:
    """One risk score: the supervised probability weighs n / (n + 50) of it, at most 0.8."""
    if sup is None:
        return unsup
    w = min(0.8, n_labels / (n_labels + 50.0))
    return (1.0 - w) * unsup + w * sup


def unbilled_energy(f: Features) -> FloatArray:
    """Estimated energy that was not billed: the drop's deficit, the export, or a share of the reshaped days.

    A reshaped profile with the same daily total (flat or reversed, a time-of-use trick) loses
    money, not energy: 10 % of the energy of the anomalous days stands in for it.
    """
    deficit = f.drop.deficit
    reverse = f.reverse_energy if f.reverse_energy is not None else np.zeros_like(deficit)
    prof = np.zeros_like(deficit)
    if f.profile is not None:
        days = np.where(f.profile.start >= 0, f.profile.end - f.profile.start, 0)
        daily_level = np.nan_to_num(f.drop.level)
        prof = 0.1 * days * daily_level
    return np.maximum.reduce([deficit, reverse, prof])


def expected_value(
    prob: FloatArray, energy: FloatArray, commodity: np.ndarray, tariff: dict[str, float] | None = None
) -> FloatArray:
    """Expected value per visit = probability × unbilled energy × tariff."""
    t = dict(DEFAULT_TARIFF, **(tariff or {}))
    price = np.array([t.get(str(c), t["electricity"]) for c in commodity])
    return prob * energy * price

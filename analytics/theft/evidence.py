"""The evidence table: one entry per component of the rule-based theft score.

Each entry names a component, its weight in the noisy-OR, the features it reads, its saturation
(where it starts to count and where it counts fully, :class:`Ramp`), what it means in a sentence and
whether ``releve theft list --signal`` filters on it. :data:`analytics.theft.model.EVIDENCE` and
``WEIGHTS``, the CLI's ``--signal`` choices and the component table in docs/theft.md are derived
from :data:`COMPONENTS` (tests/analytics/theft/test_evidence_table.py holds the docs to it).

A component of one feature and one ramp (``event``, ``reverse``, ``silence``, ``vee``)
is computed from its entry alone: adding such a signal is one entry here. The others are gated by
the energy balance in :func:`analytics.theft.model.evidence`, which reads their named parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from releve.arrays import FloatArray


@dataclass(frozen=True)
class Ramp:
    """``clip((x − start) / span, 0, 1)``: nothing up to ``start``, fully from ``start + span``."""

    start: float
    span: float

    def __call__(self, x: FloatArray) -> FloatArray:
        """The ramp applied to ``x``."""
        import numpy as np  # here: the CLI reads the table for its choices without loading numpy

        return np.clip((x - self.start) / self.span, 0, 1)

    def describe(self) -> str:
        """The ramp in words for the docs table."""
        if self.start == 0:
            return f"fully at {self.span:g}"
        return f"from {self.start:g}, fully at {self.start + self.span:g}"


@dataclass(frozen=True)
class Lift:
    """``floor + gain · x``: how far a confirmation in 0–1 lets a component count."""

    floor: float
    gain: float

    def __call__(self, x: FloatArray) -> FloatArray:
        """The lift applied to ``x``."""
        return self.floor + self.gain * x


@dataclass(frozen=True, kw_only=True)
class Component:
    """One evidence component, in 0–1 for every meter."""

    name: str
    #: Its weight in the noisy-OR ``1 − Π (1 − wₖ·eₖ)``.
    weight: float
    #: The feature columns (:data:`analytics.theft.features.FEATURES`) it reads; the ramp reads the first.
    reads: tuple[str, ...]
    #: Saturation of its main input.
    ramp: Ramp
    #: What a meter scoring on it shows, in a sentence (docs, and the reason of a component
    #: :func:`analytics.theft.ranking.explain` has no words of its own for).
    explanation: str
    #: Whether ``releve theft list --signal`` offers it.
    cli_filter: bool = True


@dataclass(frozen=True, kw_only=True)
class Drop(Component):
    """The sustained drop: its depth (``ramp``) times its length, confirmed by the daily balance."""

    days: Ramp
    #: With a daily feeder, how much the balance's confirmation (:data:`BALANCE_CONFIRMS`) lets it count.
    confirmed: Lift
    #: Without a daily feeder.
    unconfirmed: float
    #: Without any feeder, how much the fleet-calibrated change lets it count.
    no_feeder: Lift


@dataclass(frozen=True, kw_only=True)
class Zero(Component):
    """Zero days while the meter reported, confirmed by the daily balance."""

    confirmed: Lift
    unconfirmed: float


@dataclass(frozen=True, kw_only=True)
class Profile(Component):
    """A reshaped daily profile; without any feeder it needs a fleet-calibrated change."""

    no_feeder: Lift


@dataclass(frozen=True, kw_only=True)
class Balance(Component):
    """The hourly feeder balance: the share (``ramp``) believed as far as the strength is above noise."""

    #: On log₁₀ of the strength.
    strength: Ramp
    #: Where the hourly balance is known, how much it lets the series components count.
    gate: Lift


@dataclass(frozen=True, kw_only=True)
class Change(Component):
    """Recent change against the same season: z of the level plus ``shape_weight`` × the shape's."""

    shape_weight: float


@dataclass(frozen=True, kw_only=True)
class Marks(Component):
    """Tamper marks: the strongest mark run (``ramp``), halved where the hourly balance puts nothing."""

    #: With an hourly feeder, how much the balance lets them count.
    hourly: Lift


@dataclass(frozen=True, kw_only=True)
class Peer(Component):
    """Far below the peers: without a feeder one of the few hints of a theft older than the data."""

    #: Where the area has a feeder (daily or hourly), the share of it that counts (the balance says more).
    with_feeder: float


@dataclass(frozen=True, kw_only=True)
class FlatRun(Component):
    """Flatter weeks (``ramp`` of the fleet z), unless the flat days sit at the meter's base load.

    A vacant home draws its base load (fridge, standby) all day: flat, and low. A flattened or
    randomised register keeps the day's level (or a share of it) well above the base.
    """

    #: On ``flat_level`` (the run's mean day over 24 × the base-load hour): how far above the base
    #: load the flat days must sit to count (nothing at 1.1 ×, fully from 1.5 ×).
    above_base: Ramp
    #: Without a feeder, how much of the household's own evidence (drop, change, fell …) a flat run
    #: at the base load takes away (it is the shape of a vacancy).
    vacancy_damp: float


@dataclass(frozen=True, kw_only=True)
class Pattern(Component):
    """A pattern of the household's own series that honest load rarely makes (on/off weeks, reversed days).

    Without any feeder the household's own evidence tops out below a full tamper mark
    (:data:`analytics.theft.model.NO_FEEDER_CEILING`); a pattern lifts that ceiling ``lift`` of the
    way to 1, so a fall of the level that comes with it ranks above the plain falls (which real
    households make as often as thieves), and below a full mark.
    """

    lift: float


@dataclass(frozen=True, kw_only=True)
class Together(Component):
    """Two signals that must hold together: ``ramp`` of the smaller of the two features it reads."""


#: Share of a drop's missing energy the area's daily balance accounts for, as a confirmation in 0–1.
BALANCE_CONFIRMS = Ramp(0.0, 0.6)

#: Without a feeder: how far the household's largest hourly steps held while its level changed
#: lately (``steps_held``, log of their ratio over the level's). Real appliances keep their power,
#: so a household that uses less keeps its steps; a scaled register shrinks them with the level.
STEPS_HELD = Ramp(0.1, 0.2)
#: … and how much of the household's own evidence (drop, change, fell …) steps that held take away.
STEPS_HELD_DAMP = 0.2

DROP = Drop(
    name="drop",
    weight=0.9,
    reads=("drop_depth", "drop_days", "balance_share"),
    ramp=Ramp(0.0, 0.4),
    days=Ramp(0.0, 21.0),
    confirmed=Lift(0.15, 0.85),
    unconfirmed=0.6,
    no_feeder=Lift(0.4, 0.6),
    explanation="a sustained drop (depth × length), scaled by how much the area's energy balance confirms it",
)
ZERO = Zero(
    name="zero",
    weight=0.9,
    reads=("zero_run", "balance_share"),
    ramp=Ramp(1.0, 6.0),
    confirmed=Lift(0.4, 0.6),
    unconfirmed=0.8,
    explanation="zero consumption for days while the meter reported (a stopped register)",
)
PROFILE = Profile(
    name="profile",
    weight=0.85,
    reads=("profile_score",),
    ramp=Ramp(0.0, 0.5),
    no_feeder=Lift(0.3, 0.7),
    explanation="a flattened, reversed or reshaped daily profile",
)
EVENT = Component(
    name="event",
    weight=0.9,
    reads=("event_score",),
    ramp=Ramp(0.0, 1.0),
    explanation="a tamper-type event, fully when consumption fell after it",
)
REVERSE = Component(
    name="reverse",
    weight=0.95,
    reads=("reverse_share",),
    ramp=Ramp(0.0, 0.05),
    explanation="export or reverse flow on an import-only meter",
)
PEER = Peer(
    name="peer",
    weight=0.5,
    reads=("peer_low",),
    ramp=Ramp(0.0, 4.0),
    with_feeder=0.3,
    explanation="far below peers of the same class and area (weak where a feeder says more)",
)
SILENCE = Component(
    name="silence",
    weight=0.25,
    reads=("silence_unrecovered",),
    ramp=Ramp(0.0, 7.0),
    explanation="silent days the register did not catch up afterwards (weak)",
)
VEE = Component(
    name="vee",
    weight=0.15,
    reads=("estimate_streak",),
    ramp=Ramp(0.0, 14.0),
    explanation="a long streak of estimated days (weak)",
)
BALANCE = Balance(
    name="balance",
    weight=0.95,
    reads=("interval_share", "interval_strength"),
    ramp=Ramp(0.05, 0.15),
    strength=Ramp(2.0, 1.3),
    gate=Lift(0.1, 0.9),
    explanation="the share of the meter's energy the feeder's hourly residual puts on it",
)
CHANGE = Change(
    name="change",
    weight=0.8,
    reads=("recent_level_z", "recent_shape_z"),
    ramp=Ramp(1.5, 4.0),
    shape_weight=0.3,
    explanation="the last 30 days against the same season earlier, calibrated on the fleet",
)
FELL = Component(
    name="fell",
    weight=0.9,
    reads=("recent_drop",),
    ramp=Ramp(0.0, 0.5),
    explanation="the last 30 days against the first 45, over the seasonal index",
)
FLAT_RUN = FlatRun(
    name="flat_run",
    weight=0.8,
    reads=("spread_run_z", "flat_level"),
    ramp=Ramp(3.0, 4.0),
    above_base=Ramp(1.1, 0.4),
    vacancy_damp=0.8,
    explanation="a run of weeks whose days are flatter than the meter's others, standing out of the fleet",
)
MARKS = Marks(
    name="marks",
    weight=0.97,
    reads=("mark_zeroed", "mark_flat", "mark_ceiling"),
    ramp=Ramp(0.4, 0.3),
    hourly=Lift(0.5, 0.5),
    explanation="tamper marks (exact zeros on normal days, flat days, a repeated ceiling) in a run of weeks",
)
ON_OFF = Pattern(
    name="on_off",
    weight=0.9,
    reads=("alternate_weeks",),
    ramp=Ramp(0.5, 0.4),
    lift=0.5,
    explanation="weeks whose level alternates week by week (on/off theft) for six weeks or more",
)
REVERSED = Pattern(
    name="reversed",
    weight=0.9,
    reads=("reversed_run",),
    ramp=Ramp(2.0, 4.0),
    lift=0.5,
    explanation="weeks in a row whose mean day is the meter's earliest weeks' day reversed in time (the same hours)",
)
TEXTURE = Pattern(
    name="texture",
    weight=0.9,
    reads=("recent_texture_z", "recent_drop"),
    ramp=Ramp(3.0, 3.0),
    lift=0.5,
    explanation="the last 30 days' half-hours jump from one to the next more than in the same season earlier "
    "(random scaling per interval), calibrated on the fleet, as far as the level fell with them; without a feeder",
)
SMALL_STEPS = Together(
    name="small_steps",
    weight=0.9,
    reads=("small_steps", "peer_low"),
    ramp=Ramp(0.5, 2.0),
    explanation="far below its peers and its largest hourly steps small for its level across the fleet "
    "(a register scaled since before the data: appliances keep their power); without a feeder",
)

#: Every component, in the order of the evidence matrix's columns.
COMPONENTS: tuple[Component, ...] = (
    DROP,
    ZERO,
    PROFILE,
    EVENT,
    REVERSE,
    PEER,
    SILENCE,
    VEE,
    BALANCE,
    CHANGE,
    FELL,
    FLAT_RUN,
    MARKS,
    ON_OFF,
    REVERSED,
    TEXTURE,
    SMALL_STEPS,
)

#: Each component by name.
BY_NAME: dict[str, Component] = {c.name: c for c in COMPONENTS}

#: What ``releve theft list --signal`` accepts: the filterable components and ``anomaly`` (no rule evidence).
SIGNALS: tuple[str, ...] = (*(c.name for c in COMPONENTS if c.cli_filter), "anomaly")


def markdown_table() -> str:
    """The component table of docs/theft.md."""
    lines = [
        "| component | weight | reads | saturation | what it shows |",
        "|---|---|---|---|---|",
    ]
    for c in COMPONENTS:
        reads = ", ".join(f"`{r}`" for r in c.reads)
        lines.append(f"| `{c.name}` | {c.weight:g} | {reads} | {c.ramp.describe()} | {c.explanation} |")
    return "\n".join(lines) + "\n"

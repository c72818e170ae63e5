"""The labelled corpus (``cases/*.csv``, written by ``make_cases.py``) and how findings are scored on it.

A finding is keyed by (meter, instant UTC). An *alarm* is a read with at least one warning or error.

- Faults are runs of consecutive reads of a meter with the same fault label. A ``scale`` fault is
  detected when every one of its reads is alarmed (a run of scaled reads is one fault, all flagged);
  ``digit`` and ``negative`` when its read is; ``gap`` when its read carries a GAP finding;
  ``frozen``, ``leak`` and ``vacancy`` when any of their reads or the read right after is.
- An alarm is true when it is on a fault's read or on the read right after a fault (the catch-up
  after a frozen register, the read after a vacancy); any other alarm is false.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

CASES = Path(__file__).parent / "cases"
FAULTS = {"scale", "digit", "negative", "frozen", "gap", "leak", "vacancy"}
QUIET = {"", "rollover", "exchange", "estimate"}
ALL_READS = {"scale", "digit", "negative"}  # every read of the fault must be alarmed
NOT_SUBSTITUTED = {"leak", "vacancy"}


@dataclass(frozen=True, slots=True)
class Read:
    """One labelled read of the corpus."""

    case: str
    meter: str
    at: datetime
    index: float
    read_type: str
    unit: str
    digits: int | None
    expect: str
    truth: float | None


@dataclass
class Finding:
    """A finding as both paths report it."""

    rule: str
    severity: str
    suggestions: tuple[float, ...]
    usage_lo: float | None = None
    usage_hi: float | None = None


@dataclass
class Score:
    """Recall and precision over the corpus, with what was missed and what was false."""

    faults: int
    detected: int
    alarms: int
    true_alarms: int
    missed: list[tuple[str, str, datetime]] = field(default_factory=list)
    false: list[tuple[str, datetime, str]] = field(default_factory=list)
    truth_suggested: int = 0
    truth_first: int = 0
    corrections: int = 0

    @property
    def recall(self) -> float:
        return self.detected / self.faults

    @property
    def precision(self) -> float:
        return self.true_alarms / self.alarms if self.alarms else 1.0

    def summary(self) -> str:
        return (
            f"{self.faults} faults, recall {self.recall:.3f} ({self.detected}); {self.alarms} alarmed reads, "
            f"precision {self.precision:.3f}; true index suggested for {self.truth_suggested}/{self.corrections} "
            f"scale and digit reads, first for {self.truth_first}"
        )


def case_files() -> list[Path]:
    return sorted(CASES.glob("*.csv"))


def load(path: Path) -> list[Read]:
    """The labelled reads of one case file, in file order."""
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            at = datetime.fromisoformat(row["read_at"]).replace(tzinfo=UTC)
            out.append(
                Read(
                    path.stem,
                    row["meter"],
                    at,
                    float(row["index"]),
                    row["read_type"],
                    row["unit"],
                    int(row["register_digits"]) if row["register_digits"] else None,
                    row["expect"],
                    float(row["truth"]) if row["truth"] else None,
                )
            )
    return out


def faults_of(reads: list[Read]) -> list[list[Read]]:
    """Runs of consecutive reads of one meter with the same fault label."""
    runs: list[list[Read]] = []
    prev: Read | None = None
    for r in reads:
        if r.expect in FAULTS:
            if runs and prev is not None and prev.meter == r.meter and prev.expect == r.expect and runs[-1][-1] is prev:
                runs[-1].append(r)
            else:
                runs.append([r])
        prev = r
    return runs


Key = tuple[str, datetime]


def score(reads: list[Read], found: dict[Key, list[Finding]]) -> Score:
    """Score findings keyed by (meter, instant) against the labels of ``reads`` (all cases, in file order)."""
    alarmed = {k for k, fs in found.items() if any(f.severity in ("warning", "error") for f in fs)}
    by_key = {(r.meter, r.at): r for r in reads}
    after: dict[Key, Key] = {}
    for a, b in itertools.pairwise(reads):
        if a.meter == b.meter:
            after[(a.meter, a.at)] = (b.meter, b.at)
    faults = faults_of(reads)
    s = Score(len(faults), 0, len(alarmed), 0)
    explained: set[Key] = set()
    for run in faults:
        keys = [(r.meter, r.at) for r in run]
        nxt = after.get(keys[-1])
        explained.update(keys)
        if nxt is not None:
            explained.add(nxt)
        kind = run[0].expect
        if kind in ALL_READS:
            hit = all(k in alarmed for k in keys)
        elif kind == "gap":
            hit = any(f.rule == "GAP" for f in found.get(keys[0], []))
        else:
            hit = any(k in alarmed for k in keys) or (nxt is not None and nxt in alarmed)
        if hit:
            s.detected += 1
        else:
            s.missed.append((run[0].case, kind, run[0].at))
        for r in run:
            if r.truth is not None:
                s.corrections += 1
                suggested = [f.suggestions for f in found.get((r.meter, r.at), []) if f.suggestions]
                s.truth_suggested += any(r.truth in sg for sg in suggested)
                s.truth_first += any(sg[0] == r.truth for sg in suggested)
    for k in sorted(alarmed):
        if k in explained:
            s.true_alarms += 1
        else:
            r = by_key.get(k)
            s.false.append((r.case if r else k[0], k[1], ",".join(f.rule for f in found[k])))
    return s


def baseline_findings(
    reads: list[Read], low: float = 0.25, high: float = 4.0, gap_days: float = 35
) -> dict[Key, list[Finding]]:
    """The simple baseline a utility runs today: a high/low band on each read's usage.

    Per meter, a read's usage per day is compared with the median usage per day of its last six
    reads: below zero, or outside ``low``..``high`` × that median, is a warning (the utility's HILO
    check: usage per day outside a band around the recent median); a read more than ``gap_days`` after the previous one is a gap.
    No suggestions, no read types, no runs: what a ten-line script does.
    """
    found: dict[Key, list[Finding]] = {}
    history: dict[str, list[float]] = {}
    prev: dict[str, Read] = {}
    for r in reads:
        p = prev.get(r.meter)
        prev[r.meter] = r
        if p is None:
            continue
        days = max((r.at - p.at).total_seconds() / 86400, 1e-9)
        rate = (r.index - p.index) / days
        past = history.setdefault(r.meter, [])
        if days > gap_days:
            found.setdefault((r.meter, r.at), []).append(Finding("GAP", "warning", ()))
        expected = sorted(past[-6:])[len(past[-6:]) // 2] if past else None
        if rate < 0 or (expected is not None and expected > 0 and not low * expected <= rate <= high * expected):
            found.setdefault((r.meter, r.at), []).append(Finding("HILO", "warning", ()))
        else:
            past.append(rate)
    return found

"""Writes the labelled corpus of index sequences in ``cases/`` (run once; the files are the test data).

    python -m tests.analytics.vee.make_cases

Each case is one file, ``cases/<family>_<nn>.csv``, in the ``releve vee check`` format with two
extra columns (file mode ignores extra columns):

- ``expect``: what is wrong with this read, empty when nothing is. Fault labels, which must raise
  an alarm: ``scale`` (×10, ÷10, ×1000; consecutive ``scale`` reads are ONE fault and every read of
  it must be flagged), ``digit`` (dropped, extra or transposed digit), ``negative`` (a read below the
  previous one), ``frozen`` (the register repeats), ``gap`` (the read after reads went missing),
  ``leak`` (genuine high use, 5× normal: warned, never substituted), ``vacancy`` (no use: warned,
  never substituted). Labels that must NOT raise an alarm (an info annotation is fine):
  ``rollover``, ``exchange`` (a new meter counting from near zero, no record), ``estimate`` (the
  utility's own estimated read; the actual after it is the catch-up).
- ``truth``: the index the meter really showed, for ``scale`` and ``digit`` reads.

The sequences are drawn from a seeded generator (so the files can be written again identically),
plus the cases of issue 14 written by hand: the transpositions 19414 → 19144, 46352 → 46532 and
26565 → 26556, the persistent ×10 error around 14,081, and the utility's own 89954 for 899.
"""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

CASES = Path(__file__).parent / "cases"
HEADER = ["meter", "read_at", "index", "read_type", "unit", "register_digits", "expect", "truth"]


class Case:
    """One sequence being built: true indexes, what was recorded, labels."""

    def __init__(self, name: str, unit: str, cadence_days: float, start: datetime, digits: int | None = None):
        self.name, self.unit, self.cadence, self.digits = name, unit, cadence_days, digits
        self.rows: list[list[str]] = []
        self.t = start

    def add(
        self,
        index: float,
        read_type: str = "actual",
        expect: str = "",
        truth: float | None = None,
        days: float | None = None,
    ) -> None:
        self.rows.append(
            [
                self.name,
                self.t.strftime("%Y-%m-%dT%H:%M"),
                _num(index),
                read_type,
                self.unit,
                str(self.digits or ""),
                expect,
                "" if truth is None else _num(truth),
            ]
        )
        self.t += timedelta(days=self.cadence if days is None else days)

    def write(self) -> None:
        with (CASES / f"{self.name}.csv").open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(HEADER)
            w.writerows(self.rows)


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:.3f}"


def usage_stream(rng: random.Random, mean: float, noise: float = 0.25):
    while True:
        yield max(0, round(mean * rng.uniform(1 - noise, 1 + noise)))


def base(
    rng: random.Random,
    name: str,
    kind: str,
    n: int | None = None,
    start_index: int | None = None,
    mean: float | None = None,
    digits: int | None = None,
) -> tuple[Case, list[int]]:
    """A case and its true index sequence: monthly water reads or daily electricity reads."""
    if kind == "monthly":
        case = Case(name, "m3", 30.0, datetime(2023, 1, 2, 9, tzinfo=UTC), digits)
        n = n or rng.randint(18, 24)
        mean = mean or rng.randint(12, 45)
        idx = start_index if start_index is not None else rng.randint(300, 80000)
    else:
        case = Case(name, "kWh", 1.0, datetime(2024, 3, 1, 7, tzinfo=UTC), digits)
        n = n or rng.randint(30, 40)
        mean = mean or rng.randint(10, 30)
        idx = start_index if start_index is not None else rng.randint(2000, 90000)
    stream = usage_stream(rng, mean)
    true = [idx]
    for _ in range(n - 1):
        true.append(true[-1] + next(stream))
    return case, true


def scaled(x: int, factor: float) -> int:
    """A whole-number index off by ``factor``; ÷10 on a display of whole numbers drops the last digit."""
    return x * int(factor) if factor >= 1 else x // round(1 / factor)


def swap_adjacent(x: int, k: int) -> int:
    """``x`` with its digits k and k+1 (from the right, 0-based) swapped."""
    a, b = (x // 10**k) % 10, (x // 10 ** (k + 1)) % 10
    return x + 9 * (a - b) * 10**k


def main() -> None:
    rng = random.Random(14)
    CASES.mkdir(exist_ok=True)
    for old in CASES.glob("*.csv"):
        old.unlink()
    cases: list[Case] = []

    def plain(case: Case, true: list[int], labels: dict[int, tuple[str, float, str, float | None]]) -> None:
        """labels: position → (expect, recorded value, read_type, truth)."""
        for i, x in enumerate(true):
            if i in labels:
                expect, rec, rt, truth = labels[i]
                case.add(rec, rt, expect, truth)
            else:
                case.add(x)
        cases.append(case)

    for j in range(12):
        case, true = base(rng, f"clean_{j:02d}", "monthly" if j % 2 else "daily")
        plain(case, true, {})
    for j in range(6):  # rollover of a 4- or 5-digit register
        digits = 4 + j % 2
        mod = 10**digits
        kind = "monthly" if j % 2 else "daily"
        case, true = base(rng, f"rollover_{j:02d}", kind, n=24, start_index=mod - 12 * 20, mean=20, digits=digits)
        for i, x in enumerate(true):
            case.add(x % mod, expect="rollover" if x >= mod and true[i - 1] < mod else "")
        cases.append(case)
    for j in range(5):  # a new meter without a record, counting from near zero
        case, true = base(rng, f"exchange_{j:02d}", "monthly" if j % 2 else "daily")
        cut = len(true) // 2 + rng.randint(-2, 2)
        offset = true[cut] - rng.randint(0, 3) - (true[cut] - true[cut - 1])
        for i, x in enumerate(true):
            case.add(x if i < cut else x - offset, expect="exchange" if i == cut else "")
        cases.append(case)
    for j in range(12):  # one scaled read: ×10 (5), ÷10 (4), ×1000 (3)
        factor = 10 if j < 5 else (0.1 if j < 9 else 1000)
        case, true = base(
            rng, f"scale_single_{j:02d}", "daily" if factor == 1000 else ("monthly" if j % 2 else "daily")
        )
        at = rng.randint(10, len(true) - 3)
        plain(case, true, {at: ("scale", scaled(true[at], factor), "actual", true[at])})
    for j in range(8):  # a run of scaled reads: one fault
        factor = 10 if j % 2 == 0 else 0.1
        case, true = base(rng, f"scale_run_{j:02d}", "daily")
        at, length = rng.randint(10, len(true) - 8), rng.randint(3, 5)
        plain(case, true, {i: ("scale", scaled(true[i], factor), "actual", true[i]) for i in range(at, at + length)})
    # Issue 14: a ×10 error that persisted, the index ≈ 14,081 (the estimate came out at 77,506).
    case = Case("scale_run_issue14", "kWh", 1.0, datetime(2024, 5, 1, 7, tzinfo=UTC))
    true = [13800 + 14 * i + (i % 3) for i in range(30)]
    plain(case, true, {i: ("scale", true[i] * 10, "actual", true[i]) for i in range(20, 25)})
    # Transpositions inside the usage band (issue 14's three, then generated ones).
    for name, before, truth, typed, after, mean in (
        ("transposition_band_19414", 19010, 19414, 19144, 19790, 380),
        ("transposition_band_46352", 46250, 46352, 46532, 46460, 100),
        ("transposition_band_26565", 26550, 26565, 26556, 26580, 15),
    ):
        case = Case(name, "m3", 30.0, datetime(2023, 1, 2, 9, tzinfo=UTC))
        stream = usage_stream(rng, mean, 0.15)
        history = [before]
        for _ in range(9):
            history.insert(0, history[0] - next(stream))
        for x in history:
            case.add(x)
        case.add(typed, "customer", "digit", truth)
        case.add(after)
        x = after
        for _ in range(4):
            x += next(stream)
            case.add(x)
        cases.append(case)
    made = 0
    while made < 7:
        case, true = base(rng, f"transposition_band_{made:02d}", "monthly", mean=rng.choice([60, 120, 250]))
        at = rng.randint(8, len(true) - 3)
        options = [swap_adjacent(true[at], k) for k in range(len(str(true[at])) - 1)]
        prev_use, use = true[at] - true[at - 1], true[at + 1] - true[at]
        # in band, and moving the usage by more than the series' own noise (±25 %): a swap that moves
        # it less cannot be told from genuine use by anyone
        fits = [
            x
            for x in options
            if x != true[at]
            and 0.1 * prev_use <= x - true[at - 1] <= 2.5 * prev_use
            and abs(x - true[at]) >= 0.5 * prev_use
        ]
        if not fits:
            continue
        case.name = f"transposition_band_{made:02d}"
        case.rows = []
        plain(case, true, {at: ("digit", fits[0], "customer", true[at])})
        del use
        made += 1
    for j in range(6):  # transpositions far out of band
        case, true = base(
            rng, f"transposition_out_{j:02d}", "monthly" if j % 2 else "daily", start_index=rng.randint(12000, 89000)
        )
        at = rng.randint(10, len(true) - 3)
        k = len(str(true[at])) - 2  # the two leading digits
        typed = swap_adjacent(true[at], k)
        if typed == true[at]:
            typed = swap_adjacent(true[at], k - 1)
        plain(case, true, {at: ("digit", typed, "actual", true[at])})
    for j in range(6):  # a dropped digit
        case, true = base(rng, f"dropped_digit_{j:02d}", "monthly" if j % 2 else "daily")
        at = rng.randint(10, len(true) - 3)
        text = str(true[at])
        p = rng.randint(0, len(text) - 2)
        plain(case, true, {at: ("digit", int(text[:p] + text[p + 1 :]), "actual", true[at])})
    for j in range(6):  # an extra digit
        case, true = base(rng, f"extra_digit_{j:02d}", "monthly" if j % 2 else "daily")
        at = rng.randint(10, len(true) - 3)
        text = str(true[at])
        p = rng.randint(1, len(text))
        plain(case, true, {at: ("digit", int(text[:p] + str(rng.randint(0, 9)) + text[p:]), "customer", true[at])})
    for j in range(6):  # frozen register: the same index repeated, then the catch-up
        case, true = base(rng, f"frozen_{j:02d}", "daily", mean=rng.randint(12, 30))
        at, length = rng.randint(10, len(true) - 8), rng.randint(3, 6)
        plain(case, true, {i: ("frozen", true[at - 1], "actual", None) for i in range(at, at + length)})
    for j in range(5):  # a read below the previous one (not a digit mistake)
        case, true = base(rng, f"negative_{j:02d}", "monthly" if j % 2 else "daily")
        at = rng.randint(10, len(true) - 3)
        low = true[at - 1] - rng.randint(50, 400)
        plain(case, true, {at: ("negative", max(low, 0), "actual", None)})
    for j in range(5):  # a long gap: reads missing
        kind = "monthly" if j % 2 else "daily"
        case, true = base(rng, f"gap_{j:02d}", kind)
        at, missing = rng.randint(8, len(true) - 6), rng.randint(4, 6) if kind == "monthly" else rng.randint(6, 12)
        for i, x in enumerate(true):
            if not at <= i < at + missing:
                case.add(x, expect="gap" if i == at + missing else "", days=0)
            case.t += timedelta(days=case.cadence)
        cases.append(case)
    for j in range(8):  # the utility's estimates (over or under), then the actual read catching up
        case, true = base(rng, f"estimate_actual_{j:02d}", "monthly" if j % 2 else "daily")
        at, length = rng.randint(8, len(true) - 5), 1 + j % 3
        step = (true[at - 1] - true[at - 8]) / 7
        factor = 2.5 if j % 2 == 0 else 0.3
        labels = {
            at + i: ("estimate", round(true[at - 1] + factor * step * (i + 1)), "estimate", None) for i in range(length)
        }
        plain(case, true, labels)
    for j in range(6):  # a leak: genuine use at 5× normal for one to three reads
        case, true = base(rng, f"leak_{j:02d}", "monthly" if j % 2 else "daily", mean=rng.randint(15, 30))
        at, length = rng.randint(10, len(true) - 6), 1 + j % 3
        step = (true[at - 1] - true[at - 7]) / 6
        extra = 0.0
        rec = list(true)
        for i in range(at, len(true)):
            if i < at + length:
                extra += 4 * step
            rec[i] = round(true[i] + extra)
        plain(case, rec, {i: ("leak", rec[i], "actual", None) for i in range(at, at + length)})
    for j in range(5):  # a vacancy: no use for two to four reads
        case, true = base(rng, f"vacancy_{j:02d}", "monthly" if j % 2 else "daily", mean=rng.randint(18, 40))
        at, length = rng.randint(10, len(true) - 7), 2 + j % 3
        rec = list(true)
        for i in range(at, len(true)):
            rec[i] = true[i] - (true[min(i, at + length - 1)] - true[at - 1])
        plain(case, rec, {i: ("vacancy", rec[i], "actual", None) for i in range(at, at + length)})
    # The utility's own example (docs/vee.md, DIGIT_ERROR): 89954 typed for 899.
    case = Case("utility_89954", "m3", 0.0, datetime(2021, 10, 26, tzinfo=UTC))
    for when, x, rt, expect, truth in (
        ("2021-10-26T00:00", 829, "actual", "", None),
        ("2022-05-09T23:59", 867, "estimate", "estimate", None),
        ("2022-11-17T00:00", 882, "actual", "", None),
        ("2022-11-18T00:00", 882, "customer", "", None),
        ("2024-04-02T13:00", 89954, "customer", "digit", 899),
    ):
        case.t = datetime.fromisoformat(when).replace(tzinfo=UTC)
        case.add(x, rt, expect, truth, days=0)
    cases.append(case)
    for case in cases:
        case.write()
    print(f"{len(cases)} cases written to {CASES}")


if __name__ == "__main__":
    main()

"""A bill run on the simulated fleet: backfill → ingest loader → VEE → bills, checked against the labels.

Every account is billed or held; accounts with injected data problems (communication loss, frozen
register, scale jump) inside the cycle are held; accounts without any injection are issued; the
billed consumption of issued bills reconciles with the validated interval series of the period, and
each cycle starts at the index the previous one ended on.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from billing.run import run_bills
from billing.tariffs import parse_tariffs

importer = pytest.importorskip("ingest.importer")
vee = pytest.importorskip("analytics.vee.run")
engine = pytest.importorskip("simulators.engine")
config = pytest.importorskip("simulators.config")
backfill = pytest.importorskip("simulators.backfill")

pytestmark = [pytest.mark.db, pytest.mark.slow]

DAYS = 62
P1, P2 = date(2026, 1, 31), date(2026, 3, 2)  # cycles 2 Jan – 31 Jan and 1 Feb – 2 Mar
WINDOW = (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
DATA_PROBLEMS = {"comm_loss", "frozen_register", "scale_jump"}
TARIFFS = (Path(__file__).parent / "tariffs_test.toml").read_text()


def test_simulated_fleet_is_billed_held_by_labels_and_reconciles(db, tmp_path):
    cfg = config.FleetConfig(
        seed=7,
        horizon_days=DAYS,
        theft={"rate": 0},
        consumption={"vacancy_rate": 0},
        topology={"transformers": 2, "customers_per_transformer": 12, "dmas": 1, "customers_per_dma": 10},
        faults={
            "rate": 0.7,
            "kinds": {"comm_loss": 1, "frozen_register": 1, "scale_jump": 1, "rollover": 1, "meter_exchange": 1},
        },
    )
    sim = engine.Simulation(cfg)
    backfill.backfill(sim, DAYS, tmp_path, progress=False)
    importer.load_directory(db.url, db.settings, tmp_path)
    vee.run_vee(db.url, db.settings)
    # The utility's registry assigns tariffs; the simulated one does not.
    with db.connect() as conn:
        conn.execute("""UPDATE account a SET tariff_code = CASE sp.commodity WHEN 'water' THEN 'W' ELSE 'E' END
                        FROM service_point sp WHERE sp.id = a.service_point_id""")
    # a utility that holds a bill when more than 5 % of its days lack an actual read
    book = parse_tariffs(TARIFFS.replace("max_estimated_share = 0.25", "max_estimated_share = 0.05"), "tariffs")
    for period_end in (P1, P2):
        for cycle in "ABCD":
            run_bills(db.url, db.settings, book, cycle, period_end, period_end)

    with db.connect() as conn:
        accounts = conn.execute("SELECT count(*) FROM account").fetchone()[0]
        bills = conn.execute(
            """SELECT m.serial, b.status, b.hold_reasons, b.consumption, d.start_index, d.end_index, d.start_at,
                      d.end_at, d.meter_id
               FROM bill b JOIN account a ON a.id = b.account_id
               JOIN bill_determinant d ON d.bill_id = b.id JOIN meter m ON m.id = d.meter_id
               WHERE b.period_end = %s AND b.status IN ('issued', 'held') ORDER BY m.serial, d.seq""",
            (P2,),
        ).fetchall()
        n_bills = conn.execute(
            "SELECT count(*) FROM bill WHERE period_end = %s AND status IN ('issued', 'held')", (P2,)
        ).fetchone()[0]
        intervals = dict(
            conn.execute(
                """SELECT v.meter_id, sum(v.value) FROM validated_reading v JOIN channel c ON c.id = v.channel_id
               WHERE c.code IN ('1-0:1.29.0', '8-0:1.29.0') AND v.ts >= %s AND v.ts < %s GROUP BY 1""",
                WINDOW,
            ).fetchall()
        )
        p1_end = dict(
            conn.execute(
                """SELECT d.meter_id, d.end_index FROM bill b JOIN bill_determinant d ON d.bill_id = b.id
               WHERE b.period_end = %s AND b.status IN ('issued', 'held') AND d.end_at = %s""",
                (P1, WINDOW[0]),
            ).fetchall()
        )
    assert n_bills == accounts  # every account billed or held
    labels = {}
    for lab in backfill.read_labels(tmp_path / "labels.csv"):
        if lab.start < WINDOW[1] and lab.end > WINDOW[0]:
            labels.setdefault(lab.meter, set()).add(lab.kind)
    status = {serial: st for serial, st, *_ in bills}
    problems = {s for s, kinds in labels.items() if kinds & DATA_PROBLEMS}
    clean = {s for s in status if s not in labels}
    assert problems, "the fleet should have data problems in the cycle"
    assert {s: status[s] for s in problems} == dict.fromkeys(problems, "held")
    assert {s: status[s] for s in clean} == dict.fromkeys(clean, "issued")
    # Reconciliation: issued bills = the validated interval consumption of the period, meter by meter,
    # and in total; each determinant starts where the previous cycle ended.
    issued = [b for b in bills if b[1] == "issued" and "meter_exchange" not in labels.get(b[0], set())]
    assert len(issued) >= len(clean)
    # (registers and interval values have different resolutions in the simulator: 0.1 % tolerance, as VEE's sum check)
    for serial, _, _, consumption, *_, meter_id in issued:
        validated = Decimal(repr(intervals[meter_id]))
        assert abs(consumption - validated) <= Decimal("0.001") * validated + Decimal("0.01"), serial
    billed = sum(b[3] for b in issued)
    total = sum(Decimal(repr(intervals[b[8]])) for b in issued)
    assert abs(billed - total) <= Decimal("0.001") * total
    for serial, _, _, _, start_index, _, start_at, _, meter_id in bills:
        if start_at == WINDOW[0] and meter_id in p1_end:
            assert start_index == p1_end[meter_id], serial

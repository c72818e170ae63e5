"""VEE over the real database: incremental runs, the review queue, versions, audit, frozen data, CLI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest

from analytics.vee import review
from analytics.vee.run import run_vee
from ingest import BatchWriter, ReadingFrame
from releve import db as releve_db
from releve.cli import main
from releve.model import Reading, ReadType, Source

from .faults import DAY, make_fleet, score

pytestmark = pytest.mark.db

CH = "1-0:1.8.0"


def add_meters(db, serials, digits=None, commodity="electricity", unit="kWh", protocol="import"):
    digits = digits or {}
    with db.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO meter (serial, commodity, model, unit, protocol, register_digits) "
            "VALUES (%s, %s, 'test', %s, %s, %s)",
            [(s, commodity, unit, protocol, digits.get(s)) for s in serials],
        )


def land(db, serials, t, values, unit="kWh"):
    ts = (np.asarray(t) * 1e6).astype("datetime64[us]")
    frame = ReadingFrame.from_columns(serials, [CH] * len(values), ts, np.asarray(values, float), [unit] * len(values))
    with BatchWriter(db.url, db.settings) as writer:
        result = writer.write(frame)
    assert result.rejected == 0


def daily(meter, start, values, t0=datetime(2024, 1, 1, 12, tzinfo=UTC), source=Source.MANUAL):
    return [
        Reading(meter, CH, t0 + timedelta(days=start + i), v, "kWh", source, ReadType.ACTUAL)
        for i, v in enumerate(values)
    ]


def write(db, readings):
    """Land readings as the collectors do: one batch per source (a frame holds one source)."""
    with BatchWriter(db.url, db.settings) as writer:
        for source in dict.fromkeys(r.source for r in readings):
            writer.write([r for r in readings if r.source is source])


def raw_rows(db):
    with db.connect() as conn:
        return conn.execute(
            "SELECT meter_id, channel_id, ts, value, batch_id FROM reading_all ORDER BY 1, 2, 3"
        ).fetchall()


def test_injected_fleet_is_scored_against_labels_over_the_database_in_two_incremental_runs(db):
    fleet = make_fleet(meters=240, days=80, seed=11)
    serials = [f"F{m:04d}" for m in range(fleet.meters)]
    add_meters(db, serials, {serials[m]: int(fleet.digits[m]) for m in range(fleet.meters)})
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO service_point (code, commodity) SELECT 'SP-' || serial, commodity FROM meter")
        for m, t, removal, install in fleet.exchanges:
            at = datetime.fromtimestamp(t, UTC)
            cur.execute(
                """INSERT INTO installation (meter_id, service_point_id, installed_at, removed_at, install_index,
                                             removal_index, reason)
                   SELECT m.id, sp.id, %s, %s, 0, %s, 'exchange' FROM meter m JOIN service_point sp
                     ON sp.code = 'SP-' || m.serial WHERE m.serial = %s""",
                (at - timedelta(days=400), at, removal, serials[m]),
            )
            cur.execute(
                """INSERT INTO installation (meter_id, service_point_id, installed_at, install_index, reason)
                   SELECT m.id, sp.id, %s, %s, 'exchange' FROM meter m JOIN service_point sp
                     ON sp.code = 'SP-' || m.serial WHERE m.serial = %s""",
                (at, install, serials[m]),
            )
    cut = fleet.t.min() + 50 * DAY
    names = np.array(serials, dtype=object)[fleet.series]
    for part in (fleet.t < cut, fleet.t >= cut):
        land(db, list(names[part]), fleet.t[part], fleet.value[part])
        summary = run_vee(db.url, db.settings, who="test")
        assert summary.run_id is not None
        assert summary.new_reads == int(part.sum())
    assert run_vee(db.url, db.settings).run_id is None  # nothing new: the watermark holds

    with db.connect() as conn:
        rows = conn.execute(
            """SELECT m.serial, extract(epoch FROM e.ts)::float8, e.rule, e.severity, e.usage
               FROM vee_exception e JOIN meter m ON m.id = e.meter_id"""
        ).fetchall()
    index = {s: i for i, s in enumerate(serials)}
    alarms = {(index[s], t) for s, t, _, sev, _ in rows if sev != "info"}
    recall, precision, missed, false = score(fleet, alarms)
    assert recall >= 0.95, missed
    assert precision >= 0.90, false[:10]

    # Genuine rollovers and exchanges: corrected consumption, no alarm on them or the read after.
    info = {(index[s], t): (rule, usage) for s, t, rule, sev, usage in rows if sev == "info"}
    for lb in fleet.labels:
        if lb.kind not in ("rollover", "exchange"):
            continue
        assert not {(lb.meter, lb.first), (lb.meter, lb.first + DAY)} & alarms, lb
        rule, usage = info[(lb.meter, lb.first)]
        if lb.kind == "rollover" or lb.recorded:
            assert rule == {"rollover": "ROLLOVER", "exchange": "EXCHANGE"}[lb.kind]
            assert usage == pytest.approx(lb.usage, abs=0.2)
        else:
            assert rule == "RESET"


def test_digit_error_is_substituted_estimated_downstream_and_raw_rows_are_untouched(db):
    add_meters(db, ["M1"])
    values = [1000 + 10 * i for i in range(20)]
    values[12] = 11201  # 1120 typed with an extra '1'
    write(db, daily("M1", 0, values))
    before = raw_rows(db)
    run_vee(db.url, db.settings)
    with db.connect() as conn:
        exc = conn.execute("SELECT rule, suggestions FROM vee_exception WHERE status = 'open' ORDER BY rule").fetchall()
        assert [(r, s[0]) for r, s in exc] == [("DIGIT_ERROR", 1120.0), ("HILO_HIGH", 1120.0)]
        row = conn.execute(
            """SELECT value, quality, quality_flag, method, version, raw_value, under_review FROM validated_reading
               WHERE ts = %s""",
            (datetime(2024, 1, 13, 12, tzinfo=UTC),),
        ).fetchone()
    assert row == (1120.0, "estimated", "S", 17, 1, 11201.0, True)
    assert raw_rows(db) == before


def test_review_accept_edit_reject_make_versions_with_who_what_why_and_never_touch_raw(db):
    add_meters(db, ["A", "B", "C"])
    base = [500 + 7 * i for i in range(20)]
    a, b, c = list(base), list(base), list(base)
    a[10] = 57000  # 570 ×100
    b[10] = 5077  # 577 with an extra 7 inserted: a digit error
    c[10] = 9999  # nonsense
    # A is read remotely (a Wh/kWh mix-up is the likely mistake); B and C are typed in.
    write(db, daily("A", 0, a, source=Source.IMPORT) + daily("B", 0, b) + daily("C", 0, c))
    before = raw_rows(db)
    run_vee(db.url, db.settings)
    editor = releve_db.editor_role(db.settings)
    with releve_db.connect(db.url, role=editor, autocommit=True) as conn:
        queue = {(q.serial, q.rule): q for q in review.list_queue(conn)}
        review.accept(conn, queue[("A", "SCALE_JUMP")].id, "alice", note="Wh/kWh mix-up confirmed")
        review.edit(conn, queue[("B", "DIGIT_ERROR")].id, 577, "bob", note="photo of the register")
        review.reject(conn, queue[("C", "OUTLIER")].id, "carol", note="meter really read 9999 (test)")
        with pytest.raises(review.ReviewError, match="not open"):
            review.reject(conn, queue[("C", "OUTLIER")].id, "carol")
        # The editor may not change raw data nor rewrite history.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE reading SET value = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE reading_version SET value = 1")
        trail = review.audit(conn, "A")
        remaining = {(q.serial, q.rule) for q in review.list_queue(conn)}
    assert raw_rows(db) == before
    assert not {k for k in remaining if k[0] in "ABC" and k[1] in ("SCALE_JUMP", "DIGIT_ERROR", "OUTLIER")}
    last = trail[-1]
    assert (last["created_by"], last["replaced_value"], last["value"], last["kind"], last["quality"]) == (
        "alice",
        570.0,
        570.0,
        "suggestion",
        "F",
    )  # the estimate (570 by interpolation) was in force; the raw 57000 is version 0
    assert trail[0]["replaced_value"] == 57000.0 and trail[0]["created_by"] == "vee"
    assert "Wh/kWh" in last["comment"] and last["rule"] == "SCALE_JUMP"
    with db.connect() as conn:
        final = dict(
            conn.execute(
                """SELECT m.serial, (v.value, v.quality, v.method) FROM validated_reading v
                   JOIN meter m ON m.id = v.meter_id WHERE v.ts = %s""",
                (datetime(2024, 1, 11, 12, tzinfo=UTC),),
            ).fetchall()
        )
    assert final["A"] == ("570", "edited", "53")
    assert final["B"] == ("577", "edited", "55")
    assert final["C"] == ("9999", "actual", None)


def test_correction_to_billed_data_becomes_an_adjustment_and_the_billed_value_stays(db):
    add_meters(db, ["M1"])
    values = [100 + 5 * i for i in range(15)]
    values[8] = 14000  # 140 ×100 (read remotely: a scale mix-up)
    t0 = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=40)
    write(db, daily("M1", 0, values, t0=t0, source=Source.IMPORT))
    run_vee(db.url, db.settings)
    at = t0 + timedelta(days=8)
    with db.connect() as conn:
        conn.execute(
            "INSERT INTO reading_freeze (meter_id, frozen_to, reference) SELECT id, %s, 'bill 1' FROM meter",
            (at + timedelta(days=2),),
        )
        billed = conn.execute("SELECT value FROM validated_reading WHERE ts = %s", (at,)).fetchone()
    with releve_db.connect(db.url, role=releve_db.editor_role(db.settings), autocommit=True) as conn:
        exc = next(q for q in review.list_queue(conn) if q.rule == "SCALE_JUMP")
        _, kind = review.edit(conn, exc.id, 141, "dave", note="field check after billing")
    assert kind == "adjustment"
    with db.connect() as conn:
        assert conn.execute("SELECT value FROM validated_reading WHERE ts = %s", (at,)).fetchone() == billed
        adj = conn.execute("SELECT value, created_by FROM reading_version WHERE kind = 'adjustment'").fetchall()
        rebill = conn.execute("SELECT value, replaced_value, reference, status FROM reading_adjustment").fetchall()
    assert adj == [(141.0, "dave")]
    assert rebill == [(141.0, 140.0, "bill 1", "open")]  # the adjustment opened a rebill


def test_gap_is_filled_with_estimates_and_a_late_actual_takes_over(db):
    add_meters(db, ["G"])
    values = [200 + 4 * i for i in range(25)]
    reads = daily("G", 0, values)
    write(db, reads[:14] + reads[17:])  # days 14, 15, 16 missing
    run_vee(db.url, db.settings)
    with db.connect() as conn:
        est = conn.execute(
            "SELECT ts, value, quality, method FROM validated_reading WHERE quality = 'estimated' ORDER BY ts"
        ).fetchall()
        assert [(r[0].day, r[1], r[2], r[3]) for r in est] == [
            (15, 256.0, "estimated", 17),
            (16, 260.0, "estimated", 17),
            (17, 264.0, "estimated", 17),
        ]
        gap = conn.execute("SELECT message FROM vee_exception WHERE rule = 'GAP'").fetchone()
        assert gap is not None and gap[0].startswith("3 read(s) missing")
    write(db, [reads[15]])  # the real read for day 16 arrives late
    run_vee(db.url, db.settings)
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT ts, value, quality FROM validated_reading WHERE ts = %s", (reads[15].ts,)
        ).fetchall()
    assert rows == [(reads[15].ts, 260.0, "actual")]


def test_cli_runs_lists_and_accepts_through_releve_vee(db, monkeypatch, capsys):
    add_meters(db, ["W1"], commodity="water", unit="m3", protocol="manual")
    values = [800 + 3 * i for i in range(12)]
    values[-1] = 83354  # 833 followed by a stray 54
    write(db, daily("W1", 0, values))
    monkeypatch.setenv("RELEVE_DATABASE_URL", db.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", db.settings.database.role_prefix)
    assert main(["vee", "run", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "12 new reads validated" in out and "HILO_HIGH 1" in out
    assert main(["vee", "review", "list", "--meter", "W1"]) == 0
    listing = capsys.readouterr().out
    assert "correct usage" in listing and "[1] 833" in listing
    exc_id = int(next(line for line in listing.splitlines() if "DIGIT_ERROR" in line).split()[0])
    total = int(re.search(r"^(\d+) exception\(s\)$", listing, re.M).group(1))
    assert total > 1
    assert main(["vee", "review", "list", "--meter", "W1", "--limit", "1"]) == 0
    assert f"showing 1 of {total} exceptions" in capsys.readouterr().out  # the cut is said, not silent
    assert main(["vee", "review", "list", "--meter", "W1", "--all"]) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if "W1" in ln]) == total
    assert main(["vee", "review", "accept", str(exc_id), "--who", "erin", "--note", "typo"]) == 0
    assert main(["vee", "audit", "W1"]) == 0
    trail = capsys.readouterr().out
    assert "→ 833.0 by erin" in trail and "typo" in trail
    assert main(["vee", "review", "accept", str(exc_id)]) == 1  # already settled: a clear error
    assert "not open" in capsys.readouterr().err


def test_interval_series_dst_day_count_spike_gap_estimates_and_multiplier_over_the_database(db):
    """Europe/Paris meter: 25-hour day with one hour missing, a spike, and a register read without its multiplier."""
    from zoneinfo import ZoneInfo

    paris = ZoneInfo("Europe/Paris")
    add_meters(db, ["I1"])
    with db.connect() as conn:
        conn.execute("UPDATE meter SET multiplier = 40 WHERE serial = 'I1'")
        conn.execute("INSERT INTO meter_timezone SELECT id, 'Europe/Paris' FROM meter WHERE serial = 'I1'")
    start = datetime(2024, 10, 26, tzinfo=paris).astimezone(UTC)
    end = datetime(2024, 10, 29, tzinfo=paris).astimezone(UTC)
    n = int((end - start).total_seconds() // 900)
    stamps = [start + timedelta(seconds=900 * (i + 1)) for i in range(n)]
    values = [0.25] * n
    values[150] = 3.0  # a spike on the 27th (the 25-hour day)
    missing = set(range(170, 174))  # one hour missing on the 27th
    readings = [
        Reading("I1", "1-0:1.29.0", ts, v, "kWh", Source.MODBUS)
        for i, (ts, v) in enumerate(zip(stamps, values, strict=True))
        if i not in missing
    ]
    # Register reads at local midnight: Σ intervals on the 28th = 24 kWh = the raw delta, so the ×40 was never applied.
    register = [
        Reading("I1", CH, datetime(2024, 10, d, tzinfo=paris).astimezone(UTC), x, "kWh", Source.MODBUS)
        for d, x in ((28, 100.0), (29, 124.0))
    ]
    write(db, readings + register)
    run_vee(db.url, db.settings)
    with db.connect() as conn:
        exc = conn.execute(
            "SELECT rule, message FROM vee_exception e JOIN channel c ON c.id = e.channel_id ORDER BY rule"
        ).fetchall()
        est = conn.execute(
            """SELECT count(*), min(method), bool_and(quality = 'estimated') FROM validated_reading v
               JOIN channel c ON c.id = v.channel_id WHERE c.code = '1-0:1.29.0' AND v.version > 0"""
        ).fetchone()
    rules = {r for r, _ in exc}
    assert {"INTERVAL_COUNT", "SPIKE", "MULTIPLIER"} <= rules, exc
    count = next(m for r, m in exc if r == "INTERVAL_COUNT")
    assert "2024-10-27: 96 intervals, 100 expected (Europe/Paris local day)" in count
    assert est == (4, 17, True)


def test_unit_mixup_is_converted_and_flagged_and_a_clock_jump_flags_the_next_read(db):
    from releve.model import EventKind, MeterEvent

    add_meters(db, ["U1"])
    reads = daily("U1", 0, [300.0 + 6 * i for i in range(15)])
    wh = reads[9]
    reads[9] = Reading("U1", CH, wh.ts, wh.value * 1000, "Wh", Source.MANUAL, ReadType.ACTUAL)
    event = MeterEvent(
        "U1", reads[12].ts - timedelta(hours=3), EventKind.CLOCK_ADJUSTED, Source.MODBUS, {"offset_s": -120}
    )
    small = MeterEvent("U1", reads[5].ts - timedelta(hours=3), EventKind.CLOCK_ADJUSTED, Source.MODBUS, {"offset_s": 4})
    with BatchWriter(db.url, db.settings) as writer:
        writer.write(reads, events=[event, small])
    run_vee(db.url, db.settings)
    with db.connect() as conn:
        exc = conn.execute("SELECT ts, rule, message FROM vee_exception ORDER BY ts, rule").fetchall()
    assert [(ts, rule) for ts, rule, _ in exc] == [(reads[9].ts, "UNIT"), (reads[12].ts, "CLOCK")]
    assert "read in Wh, meter in kWh: converted to 354 kWh" in exc[0][2]
    assert "clock adjusted by -120 s (tolerance 30 s)" in exc[1][2]


def test_a_batch_that_commits_after_a_higher_one_was_validated_is_still_validated(db):
    add_meters(db, ["L1", "L2"])
    with db.connect() as conn:
        conn.execute("SELECT ensure_reading_partitions('2024-01-01', '2024-02-01')")
    late = psycopg.connect(db.url)  # an ingest transaction that takes its batch id first, commits last
    new_batch = "INSERT INTO ingest_batch (batch_key) VALUES (gen_random_uuid()) RETURNING id"
    batch_id = late.execute(new_batch).fetchone()[0]
    rows = daily("L1", 0, [100.0 + 5 * i for i in range(12)])
    with late.cursor() as cur:
        cur.executemany(
            """INSERT INTO reading (meter_id, channel_id, ts, value, unit_id, source_id, read_type_id, received_at,
                                    batch_id)
               SELECT m.id, c.id, %s, %s, u.id, 1, 1, now(), %s FROM meter m, channel c, unit u
               WHERE m.serial = 'L1' AND c.code = %s AND u.code = 'kWh'""",
            [(r.ts, 9999.0 if i == 11 else r.value, batch_id, CH) for i, r in enumerate(rows)],
        )
    write(db, daily("L2", 0, [50.0 + 2 * i for i in range(12)]))  # a higher batch id, committed first
    first = run_vee(db.url, db.settings)
    assert first.new_reads == 12
    late.commit()
    late.close()
    second = run_vee(db.url, db.settings)
    assert second.new_reads == 12
    with db.connect() as conn:
        flagged = conn.execute(
            "SELECT m.serial FROM vee_exception e JOIN meter m ON m.id = e.meter_id WHERE e.severity <> 'info'"
        ).fetchall()
    assert {s for (s,) in flagged} == {"L1"}


def test_a_meter_clock_drifting_past_the_tolerance_flags_the_next_read(db):
    """Collectors store meter clock minus collector time as channel 0-0:1.0.0 when they poll."""
    add_meters(db, ["K1"])
    reads = daily("K1", 0, [500.0 + 5 * i for i in range(12)])
    offsets = [
        Reading("K1", "0-0:1.0.0", r.ts + timedelta(hours=1), 2.0 if i < 7 else 95.0, "s", Source.MODBUS)
        for i, r in enumerate(reads)
    ]
    write(db, reads + offsets)
    run_vee(db.url, db.settings)
    with db.connect() as conn:
        exc = conn.execute("SELECT ts, rule, message FROM vee_exception WHERE rule = 'CLOCK'").fetchall()
    assert [(ts, rule) for ts, rule, _ in exc] == [(reads[8].ts, "CLOCK")]
    assert "meter clock 95 s off the collector's (tolerance 30 s)" in exc[0][2]


def test_a_15_minute_register_series_is_judged_on_the_first_read_of_each_utc_day_like_a_daily_one(db):
    # Q reads every 15 minutes, D once a day at 00:00 UTC with the same values as Q's first read of
    # each day: the database thins Q (dense) and numpy keeps D (sparse); both must be judged alike.
    add_meters(db, ["Q", "D"])
    days = 40
    t0 = datetime(2024, 3, 1, tzinfo=UTC).timestamp()
    quarters = np.arange(days * 96)
    q = np.round(1000 + 0.1 * quarters + 0.01 * (quarters % 7), 3)
    q[25 * 96 :] += 5000  # a jump at the first read of day 25 (and after)
    land(db, ["Q"] * len(q), t0 + 900.0 * quarters, q)
    land(db, ["D"] * days, t0 + 86400.0 * np.arange(days), q[::96])
    summary = run_vee(db.url, db.settings, who="test")
    assert summary.new_reads == 2 * days and summary.landed_reads == days * 96 + days
    with db.connect() as conn:
        found = conn.execute(
            """SELECT m.serial, e.rule, extract(epoch FROM e.ts) FROM vee_exception e JOIN meter m ON m.id = e.meter_id
               ORDER BY 2, 3, 1"""
        ).fetchall()
    by_meter = {s: sorted((rule, float(t)) for serial, rule, t in found if serial == s) for s in ("Q", "D")}
    assert by_meter["Q"] == by_meter["D"] and (by_meter["Q"] != [])
    assert any(t == t0 + 25 * 86400 for _, t in by_meter["Q"])


def test_an_incremental_run_looks_for_its_new_reads_only_in_the_parts_of_their_batches_span(db):
    """A daily run must not cost the whole history: the scope reads the weeks its batches landed in."""
    from analytics.vee.run import _scope

    add_meters(db, ["H1"])
    with db.connect() as conn:
        conn.execute("SELECT ensure_reading_partitions('2023-12-25', '2024-04-01')")
    write(db, daily("H1", 0, [100.0 + 5 * i for i in range(70)]))  # ten weeks of history, validated
    run_vee(db.url, db.settings)
    write(db, daily("H1", 70, [450.0]))  # one new day: 2024-03-11
    with db.connect() as conn, conn.transaction():
        batch = conn.execute("SELECT max(id) FROM ingest_batch").fetchone()[0]
        conn.execute("CREATE TEMP TABLE vee_todo ON COMMIT DROP AS SELECT %s::bigint AS batch_id", (batch,))
        assert _scope(conn) == [(conn.execute("SELECT id FROM meter").fetchone()[0], 1)]
        touched = conn.execute(
            """SELECT relname, seq_scan + coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables
               WHERE relname LIKE 'reading\\_y%' AND seq_scan + coalesce(idx_scan, 0) > 0"""
        ).fetchall()
    # Only the new day's part and those the twelve reads of context before it reach back into (from
    # 28 February): none of the seven parts of January and early February the history fills.
    starts = [datetime.strptime(name, "reading_y%Ym%md%d").date() for name, _ in touched]
    assert starts and min(starts) >= datetime(2024, 2, 22).date(), touched

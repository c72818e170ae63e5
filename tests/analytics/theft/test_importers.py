"""The documented CSV importers (long and SGCC wide) and ``releve theft rank --input`` (no database)."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from analytics.theft.data import TheftImportError, load_files, read_long, read_wide
from releve.cli import main
from tests.analytics.theft.fleet import START, THIEVES, build


def _write_long(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["meter", "timestamp", "value"])
        w.writerows(rows)


def test_long_format_sums_days_and_hours(tmp_path: Path):
    p = tmp_path / "long.csv"
    _write_long(
        p,
        [
            ("M1", "2026-03-01T00:00:00Z", "1.5"),
            ("M1", "2026-03-01T00:30:00Z", "0.5"),
            ("M1", "2026-03-01T13:00:00+00:00", "2"),
            ("M2", "2026-03-03T23:00:00", "4"),  # naive: UTC
            ("M1", "2026-03-03T01:00:00+02:00", "1"),  # 2026-03-02 23:00 UTC
        ],
    )
    d = read_long(p)
    assert d.serials == ["M1", "M2"]
    assert d.first_day == date(2026, 3, 1) and d.n_days == 3
    assert d.daily[0, 0] == pytest.approx(4.0)
    assert d.daily[0, 1] == pytest.approx(1.0)
    assert np.isnan(d.daily[1, 0]) and d.daily[1, 2] == pytest.approx(4.0)
    assert d.hourly is not None
    assert d.hourly[0, 0, 0] == pytest.approx(2.0) and d.hourly[0, 0, 13] == pytest.approx(2.0)
    assert d.hourly[0, 1, 23] == pytest.approx(1.0)
    assert not d.cumulative


def test_wide_sgcc_format_with_flags_and_gaps(tmp_path: Path):
    p = tmp_path / "sgcc.csv"
    p.write_text("CONS_NO,FLAG,2014/1/1,2014/1/3,2014/1/2\nA1,1,1.0,3.0,2.0\nB2,0,,5,4\n")
    d = read_wide(p)
    assert d.serials == ["A1", "B2"]
    assert d.first_day == date(2014, 1, 1) and d.n_days == 3
    assert d.daily[0].tolist() == [1.0, 2.0, 3.0]  # columns put back in day order
    assert np.isnan(d.daily[1, 0]) and d.daily[1, 1] == 4.0
    assert d.flags is not None and d.flags.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad_ts.csv", "meter,timestamp,value\nM1,yesterday,1\n", "bad_ts.csv:2"),
        ("no_col.csv", "meter,ts,value\nM1,2026-01-01,1\n", "no_col.csv:1: missing column(s) timestamp"),
        ("bad_val.csv", "meter,timestamp,value\nM1,2026-01-01T00:00:00Z,abc\n", "bad_val.csv:2"),
        ("empty.csv", "", "empty.csv: empty file"),
    ],
)
def test_long_format_errors_name_file_and_line(tmp_path: Path, name: str, text: str, where: str):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(TheftImportError, match=where.replace("(", r"\(").replace(")", r"\)")):
        read_long(p)


def test_wide_format_error_names_line(tmp_path: Path):
    p = tmp_path / "bad.csv"
    p.write_text("CONS_NO,FLAG,2014-01-01\nA1,0,x\n")
    with pytest.raises(TheftImportError, match=r"bad\.csv:2"):
        read_wide(p)


def _export_fleet(tmp_path: Path) -> dict[str, Path]:
    """The hand-built fleet as the CSV files a utility would hand over (hourly long format)."""
    data, _ = build()
    assert data.hourly is not None
    long = tmp_path / "intervals.csv"
    with long.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["meter", "timestamp", "value"])
        for i, s in enumerate(data.serials):
            for day in range(data.n_days):
                if s == "A02" and 50 <= day < 90:
                    pass  # zero days are rows too
                d0 = START + timedelta(days=day)
                for h in range(24):
                    v = data.hourly[i, day, h]
                    if np.isfinite(v):
                        w.writerow([s, f"{d0.isoformat()}T{h:02d}:00:00Z", f"{v:.5f}"])
    areas = tmp_path / "areas.csv"
    with areas.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["meter", "area", "customer_class", "latitude", "longitude"])
        for i, s in enumerate(data.serials):
            w.writerow([s, data.area[i], "residential", data.latitude[i], data.longitude[i]])
    feeders = tmp_path / "feeders.csv"
    with feeders.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["area", "date", "value", "technical_loss_pct"])
        for a, series in data.feeders.items():
            for day, v in enumerate(series):
                w.writerow([a, (START + timedelta(days=day)).isoformat(), f"{v:.4f}", "3"])
    events = tmp_path / "events.csv"
    with events.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["meter", "timestamp", "kind", "code"])
        for e in data.events:
            w.writerow([data.serials[e.meter], e.ts.isoformat(), e.kind, e.code])
    wide = tmp_path / "wide.csv"
    with wide.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["CONS_NO", "FLAG"] + [(START + timedelta(days=k)).isoformat() for k in range(data.n_days)])
        rec = np.nansum(data.hourly, axis=2)
        for i, s in enumerate(data.serials):
            w.writerow([s, int(s in THIEVES)] + [f"{v:.4f}" for v in rec[i]])
    return {"long": long, "areas": areas, "feeders": feeders, "events": events, "wide": wide}


def test_side_files_attach_areas_feeders_and_events(tmp_path: Path):
    files = _export_fleet(tmp_path)
    d = load_files(files["long"], "long", files["areas"], files["feeders"], files["events"])
    assert set(d.feeders) == {"A", "B"}
    assert d.technical_loss_pct == {"A": 3.0, "B": 3.0}
    assert d.area[d.serials.index("B02")] == "B"
    assert {e.kind for e in d.events} == {"terminal_cover_open", "terminal_cover_closed"}
    assert np.isfinite(d.latitude).all()


def test_cli_rank_long_file_prints_and_writes_the_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    files = _export_fleet(tmp_path)
    out = tmp_path / "list.csv"
    gj = tmp_path / "list.geojson"
    code = main(
        [
            "theft",
            "rank",
            "--input",
            str(files["long"]),
            "--format",
            "long",
            "--areas",
            str(files["areas"]),
            "--feeders",
            str(files["feeders"]),
            "--events",
            str(files["events"]),
            "--top",
            "5",
            "-o",
            str(out),
            "--geojson",
            str(gj),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "A01" in printed and "terminal-cover-open" in printed
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5
    # Without the export register, the reverse-energy thief is a drop; the list is the thieves.
    assert {r["meter"] for r in rows} <= set(THIEVES)
    assert len(json.loads(gj.read_text())["features"]) == 5


def test_cli_rank_wide_file_reports_flag_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    files = _export_fleet(tmp_path)
    code = main(["theft", "rank", "--input", str(files["wide"]), "--format", "wide", "--top", "3"])
    assert code == 0
    captured = capsys.readouterr()
    assert "precision@6" in captured.err
    assert "rank" in captured.out


def test_cli_rank_missing_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["theft", "rank", "--input", str(tmp_path / "nope.csv")])
    assert code == 1
    assert "nope.csv" in capsys.readouterr().err


def _lcl(path: Path, stamps: str = "start", offsets: bool = False) -> None:
    """A Low Carbon London-like file: its own column names, naive London time, half-hours.

    Two households, 2013-03-30 … 2013-04-01 local: the clocks go forward on 2013-03-31 (a day of 46
    half-hours). Each half-hour holds 0.1 kWh, plus 1 kWh at 18:00 local on each day.
    """
    from zoneinfo import ZoneInfo

    london = ZoneInfo("Europe/London")
    rows = ["LCLid,tstp,energy(kWh/hh)"]
    t = datetime(2013, 3, 30, 0, 0, tzinfo=london).astimezone(ZoneInfo("UTC"))
    stop = datetime(2013, 4, 2, 0, 0, tzinfo=london).astimezone(ZoneInfo("UTC"))
    while t < stop:
        local = t.astimezone(london)
        value = 0.1 + (1.0 if (local.hour, local.minute) == (18, 0) else 0.0)
        stamp = local + timedelta(minutes=30) if stamps == "end" else local
        for meter in ("MAC000002", "MAC000003"):
            text = stamp.isoformat(sep=" ") if offsets else stamp.replace(tzinfo=None).isoformat(sep=" ")
            rows.append(f"{meter},{text}, {value:.3f} ")
        t += timedelta(minutes=30)
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("stamps", ["start", "end"])
def test_column_mapping_local_days_and_interval_stamps(tmp_path: Path, stamps: str):
    from analytics.theft.data import FileOptions

    p = tmp_path / "lcl.csv"
    _lcl(p, stamps)
    opts = FileOptions.parse("meter=LCLid,timestamp=tstp,value=energy(kWh/hh)", stamps, "Europe/London")
    d = read_long(p, opts)
    assert d.serials == ["MAC000002", "MAC000003"]
    # Local days, and no spill-over day from the end-stamped midnight value.
    assert d.first_day == date(2013, 3, 30) and d.n_days == 3
    assert d.daily[0] == pytest.approx([48 * 0.1 + 1, 46 * 0.1 + 1, 48 * 0.1 + 1])
    assert d.hourly is not None
    assert d.hourly[0, :, 18] == pytest.approx([1.2, 1.2, 1.2])  # the evening peak stays at 18:00 local
    assert d.hourly[0, 1, 1] == 0.0  # 01:00–02:00 never happened on 2013-03-31


def test_stamps_with_offsets_land_in_utc_days_or_in_the_zone_asked(tmp_path: Path):
    from analytics.theft.data import FileOptions

    p = tmp_path / "lcl.csv"
    _lcl(p, offsets=True)
    cols = "meter=LCLid,timestamp=tstp,value=energy(kWh/hh)"
    utc = read_long(p, FileOptions.parse(cols))
    assert utc.hourly is not None
    assert utc.hourly[0, 2, 17] == pytest.approx(1.2) and utc.hourly[0, 2, 18] == pytest.approx(0.2)  # BST − 1 h
    assert utc.hourly[0, 0, 18] == pytest.approx(1.2)  # 2013-03-30: GMT, UTC itself
    local = read_long(p, FileOptions.parse(cols, "start", "Europe/London"))
    assert local.hourly is not None and local.hourly[0, 2, 18] == pytest.approx(1.2)


def test_feeder_totals_at_any_resolution(tmp_path: Path):
    from zoneinfo import ZoneInfo

    from analytics.theft.data import FileOptions, TheftData, read_feeders

    london, utc = ZoneInfo("Europe/London"), ZoneInfo("UTC")
    d = TheftData.blank(["M1"], date(2013, 3, 27), np.ones((1, 10)))
    opts = FileOptions.parse("area=substation,value=kwh", "start", "Europe/London")
    half_hourly = tmp_path / "feeder_hh.csv"
    lines = ["substation,timestamp,kwh"]
    t = datetime(2013, 3, 27, tzinfo=london).astimezone(utc)
    while t < datetime(2013, 4, 6, tzinfo=london).astimezone(utc):
        lines.append(f"T1,{t.astimezone(london).replace(tzinfo=None).isoformat()},0.5")
        t += timedelta(minutes=30)
    half_hourly.write_text("\n".join(lines) + "\n")
    daily = tmp_path / "feeder_day.csv"
    daily.write_text(
        "substation,date,kwh\n" + "".join(f"T2,{date(2013, 3, 27) + timedelta(days=k)},24\n" for k in range(10))
    )
    read_feeders(d, half_hourly, opts)
    read_feeders(d, daily, opts)
    expected = [24.0] * 10
    expected[4] = 23.0  # 2013-03-31, the clocks went forward
    assert d.feeders["T1"] == pytest.approx(expected)  # summed per local day
    assert d.feeders["T2"] == pytest.approx([24.0] * 10)
    assert "T2" not in d.feeders_hourly  # daily totals: the daily balance only
    hourly = d.feeders_hourly["T1"]  # half-hours: per hour too, for the interval balance
    assert hourly.shape == (10, 24) and np.isnan(hourly[4]).all()  # the 23-hour day is left out
    assert np.allclose(np.delete(hourly, 4, axis=0), 1.0)


@pytest.mark.parametrize(
    ("columns", "stamps", "tz", "message"),
    [
        ("meter", "start", None, "not NAME=COLUMN"),
        ("meter=LCLid", "middle", None, "--stamps must be start or end"),
        ("", "start", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_file_options_errors_say_what(columns: str, stamps: str, tz: str | None, message: str):
    from analytics.theft.data import FileOptions

    with pytest.raises(TheftImportError, match=message):
        FileOptions.parse(columns, stamps, tz)


def test_cli_rank_a_utilitys_own_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    p = tmp_path / "lcl.csv"
    _lcl(p)
    code = main(
        [
            "theft",
            "rank",
            "--input",
            str(p),
            "--columns",
            "meter=LCLid,timestamp=tstp,value=energy(kWh/hh)",
            "--tz",
            "Europe/London",
            "--top",
            "2",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "MAC000002" in captured.out and "model: ranked by the evidence rules" in captured.err
    code = main(["theft", "rank", "--input", str(p), "--top", "2"])
    assert code == 1
    assert "missing column(s) meter, timestamp, value" in capsys.readouterr().err


def _rank_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """``releve theft rank`` run with its stderr on a pseudo-terminal: (exit code, what the terminal showed)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    main_fd, term_fd = pty.openpty()
    # 24 × 100 characters: a new pseudo-terminal is 0 × 0, where a bar fitted to it is empty.
    fcntl.ioctl(term_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    releve = str(Path(sys.executable).with_name("releve"))
    proc = subprocess.Popen([releve, "theft", "rank", *args], stdout=subprocess.DEVNULL, stderr=term_fd)
    os.close(term_fd)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # EIO: the terminal's other side closed (the process ended)
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    return proc.wait(timeout=60), shown.decode("utf-8", "replace")


def test_cli_rank_shows_the_hourly_progress_on_a_terminal_only(tmp_path: Path):
    files = _export_fleet(tmp_path)
    args = ["--input", str(files["long"]), "--areas", str(files["areas"]), "--quiet"]
    code, shown = _rank_on_a_terminal(args)
    assert code == 0
    assert "hourly signals" in shown and "meters" in shown
    code, shown = _rank_on_a_terminal([*args, "--no-progress"])
    assert code == 0
    assert "hourly signals" not in shown and "model: ranked by" in shown

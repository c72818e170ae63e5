"""File mode: ``releve vee check reads.csv`` on the documented CSV format (no database)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from releve.cli import main

DATA = Path(__file__).parent / "data"
UTILITY = DATA / "utility_example.csv"


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_utility_example_flags_89954_by_high_low_with_band_around_17_and_suggests_899(tmp_path, capsys):
    out = tmp_path / "exceptions.csv"
    assert main(["vee", "check", str(UTILITY), "-o", str(out), "--tz", "Europe/Paris"]) == 0
    rows = rows_of(out.read_text())
    flagged = {r["index"] for r in rows if r["severity"] != "info"}
    assert flagged == {"89954"}  # the earlier rows are not flagged as errors
    hilo = next(r for r in rows if r["rule"] == "HILO_HIGH")
    lo, hi = float(hilo["usage_lo"]), float(hilo["usage_hi"])
    assert lo <= 17 <= hi  # the true usage 899 − 882
    assert not lo <= 89072 <= hi
    assert float(hilo["usage"]) == 89072
    assert float(hilo["read_lo"]) == 882 + lo and float(hilo["read_hi"]) == 882 + hi
    assert "899" in hilo["suggestions"].split(";")
    assert hilo["message"].startswith(f"usage 89072; correct usage {lo:g}–{hi:g}; correct readings ")
    digit = next(r for r in rows if r["rule"] == "DIGIT_ERROR")
    assert digit["suggestions"].split(";")[0] == "899"
    assert "2 finding(s), 2 exception(s), 0 bad line(s)" in capsys.readouterr().err


def test_bad_lines_are_reported_with_file_and_line_and_good_lines_still_checked(tmp_path, capsys):
    src = tmp_path / "reads.csv"
    src.write_text(
        "meter,read_at,index,read_type\n"
        "M,2024-01-01T00:00,100,actual\n"
        "M,2024-02-01T00:00,120,actual\n"
        "M,2024-02-15T00:00,abc,actual\n"  # line 4: not a number
        "M,yesterday,120,actual\n"  # line 5: bad time
        "M,2024-03-01T00:00,140,guess\n"  # line 6: unknown read type
        "M,2024-03-01T00:00\n"  # line 7: too few fields
        "M,2024-03-01T00:00,140,actual\n"
        "M,2024-04-01T00:00,160,customer\n"
        "M,2024-05-01T00:00,150,customer\n"  # below the previous read: flagged
    )
    out = tmp_path / "out.csv"
    assert main(["vee", "check", str(src), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{src}:4: index 'abc' is not a number" in err
    assert f"{src}:5: read_at 'yesterday'" in err
    assert f"{src}:6: read_type 'guess' unknown" in err
    assert f"{src}:7: " in err
    rows = rows_of(out.read_text())
    assert [(r["index"], r["rule"]) for r in rows] == [("150", "NEGATIVE")]
    assert rows[0]["message"].startswith("usage -10; correct usage ")


def test_missing_header_column_is_refused_with_a_clear_message(tmp_path, capsys):
    src = tmp_path / "reads.csv"
    src.write_text("meter,when,index\nM,2024-01-01,1\n")
    assert main(["vee", "check", str(src)]) == 1
    assert "header lacks column(s) read_at, read_type" in capsys.readouterr().err

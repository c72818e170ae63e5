"""``releve bill …`` end to end through the real command line and database."""

from __future__ import annotations

from pathlib import Path

import pytest

from releve.cli import main

from .fleet import Fleet, ts

pytestmark = pytest.mark.db

TARIFFS = str(Path(__file__).parent / "tariffs_test.toml")


@pytest.fixture
def env(db, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RELEVE_DATABASE_URL", db.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", db.settings.database.role_prefix)
    return db


def test_bill_commands(env, tmp_path, capsys):
    f = Fleet(env)
    f.simple("cli")
    f.reads("M-cli", [(ts(3, 2), 100.0), (ts(4, 1), 112.0)])
    sp = f.point("SP-move")
    f.meter("M-move")
    f.install("M-move", sp)
    f.account("NEW-move", sp, "W", opened=ts(3, 10).date())
    f.reads("M-move", [(ts(3, 2), 200.0), (ts(4, 1), 230.0)])
    f.simple("pp", tariff="E", commodity="electricity", prepaid=True)

    assert main(["bill", "tariffs", TARIFFS]) == 0
    assert "ok (5 tariff version(s))" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[billing]\ndue_days = -1\n")
    assert main(["bill", "tariffs", str(bad)]) == 1
    assert "bad.toml: billing.due_days: Input should be greater than or equal to 0" in capsys.readouterr().err

    assert (
        main(
            [
                "bill",
                "tenant",
                "change",
                "--account",
                "NEW-move",
                "--move-out-index",
                "210",
                "--move-out-date",
                "2026-03-10",
                "--move-in-index",
                "218",
                "--move-in-date",
                "2026-03-10",
                "--requested-on",
                "2026-03-12",
                "--tariffs",
                TARIFFS,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # the 15 days run from the customer's request (12 March), not from the move-in (10 March)
    assert "open — indexes 8 apart; no subscription until proof (due 2026-03-27)" in out
    case = f.one("SELECT id FROM tenant_case")
    assert (
        main(
            [
                "bill",
                "tenant",
                "proof",
                str(case),
                "--index",
                "216",
                "--date",
                "2026-03-10",
                "--document",
                "deed of sale",
                "--today",
                "2026-03-20",
            ]
        )
        == 0
    )
    assert "proven, subscription starts at 216 on 2026-03-10" in capsys.readouterr().out

    vend = tmp_path / "vend.csv"
    vend.write_text("meter,vended_at,units,token\nM-pp,2026-03-03T10:00:00+00:00,5,X1\n")
    assert main(["bill", "vending", "import", str(vend)]) == 0
    assert "1 vending record(s) added" in capsys.readouterr().out

    out_dir = tmp_path / "feed"
    assert (
        main(
            [
                "bill",
                "run",
                "--cycle",
                "A",
                "--period-end",
                "2026-03-31",
                "--issue-date",
                "2026-04-02",
                "--out",
                str(out_dir),
                "--tariffs",
                TARIFFS,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "issued 2, held 0" in out and "prepaid checked 1 (flagged 0, unchecked 0)" in out
    assert sorted(p.suffix for p in out_dir.iterdir()) == [".csv", ".json"]
    assert main(["bill", "run", "--cycle", "Z", "--period-end", "2026-03-31", "--tariffs", TARIFFS]) == 1
    assert "cycle 'Z' has no accounts, nothing to bill (cycles with accounts: A" in capsys.readouterr().err
    assert main(["bill", "feed", "--run", "1", "--out", str(tmp_path / "again")]) == 0
    assert main(["bill", "feed", "--run", "99", "--out", str(tmp_path / "none")]) == 1
    f.simple("no-tariff", tariff="NOPE")
    assert (
        main(
            [
                "bill",
                "run",
                "--cycle",
                "A",
                "--period-end",
                "2026-03-31",
                "--issue-date",
                "2026-04-02",
                "--tariffs",
                TARIFFS,
            ]
        )
        == 0
    )
    assert "skipped A-no-tariff: tariff: unknown tariff code 'NOPE'" in capsys.readouterr().out
    assert main(["bill", "notes", "--run", "2"]) == 0
    assert "skipped\tA-no-tariff\t\ttariff: unknown tariff code 'NOPE'" in capsys.readouterr().out
    assert main(["bill", "notes", "--run", "99"]) == 1
    assert "no bill run 99" in capsys.readouterr().err
    assert main(["bill", "tenant", "expire", "--as-of", "2026-04-30", "--tariffs", TARIFFS]) == 0
    assert "0 case(s) defaulted" in capsys.readouterr().out

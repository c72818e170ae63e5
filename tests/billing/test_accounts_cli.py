"""``releve account``, ``releve credit`` and ``releve work`` through the real command line and database."""

from __future__ import annotations

import json

import pytest

from releve.cli import main

from .fleet import Fleet
from .test_workorders import theft_list

pytestmark = pytest.mark.db


@pytest.fixture
def env(db, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RELEVE_DATABASE_URL", db.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", db.settings.database.role_prefix)
    return db


def ok(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_account_commands(env, tmp_path, capsys):
    f = Fleet(env)
    f.simple("c1")
    f.simple("c2")
    ok(capsys, "account", "charge", "A-c1", "--amount", "80.00", "--reason", "connection fee", "--date", "2026-03-01")
    ok(capsys, "account", "deposit", "A-c1", "--amount", "25", "--reference", "DEP-1", "--date", "2026-03-01")
    assert "(already posted)" in ok(
        capsys, "account", "pay", "A-c1", "--amount", "30.00", "--reference", "R1", "--date", "2026-03-05"
    ) + ok(capsys, "account", "pay", "A-c1", "--amount", "30.00", "--reference", "R1", "--date", "2026-03-05")
    out = ok(capsys, "account", "adjust", "A-c1", "--amount", "-5.00", "--reason", "goodwill", "--date", "2026-03-06")
    entry = int(out.rsplit(" ", 1)[1])
    ok(capsys, "account", "reverse", str(entry), "--reason", "posted on the wrong account", "--date", "2026-03-07")
    bal = json.loads(ok(capsys, "account", "balance", "A-c1", "--as-of", "2026-04-20", "--json"))
    assert (bal["balance"], bal["deposit"], bal["net"], bal["ageing"]["30"]) == ("50.00", "25.00", "25.00", "50.00")
    ok(
        capsys,
        "account",
        "statement",
        "A-c1",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-31",
        "--csv",
        "st.csv",
        "--text",
        "st.txt",
    )
    assert (tmp_path / "st.csv").read_text().splitlines()[-1].endswith(",50.00")
    assert "Statement of account A-c1" in (tmp_path / "st.txt").read_text()

    pay = tmp_path / "pay.csv"
    pay.write_text("reference,account,amount,paid_at\nX1,A-c2,10.00,2026-03-03\nX2,A-zz,1.00,2026-03-03\n")
    assert main(["account", "import-payments", str(pay)]) == 1  # a rejected line: the good one stays posted
    out = capsys.readouterr()
    assert "1 payment(s) posted (10.00), 0 already present, 1 rejected" in out.out
    assert "rejected pay.csv:3: no account 'A-zz'" in out.err
    ok(capsys, "account", "refund", "A-c2", "--amount", "10.00", "--reason", "paid twice")

    assert main(["account", "balance", "A-nope"]) == 1
    assert "releve account: no account 'A-nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["account", "pay", "A-c1", "--amount", "1.005", "--reference", "R2"])
    assert exc.value.code == 2
    assert "more than 2 decimals" in capsys.readouterr().err


def test_credit_and_work_commands(env, tmp_path, capsys):
    f = Fleet(env)
    f.simple("k1")
    f.simple("k2")
    f.simple("k3")
    f.meter("NEW-9")
    ok(capsys, "account", "charge", "A-k1", "--amount", "40.00", "--reason", "bill", "--date", "2026-03-01")
    ok(capsys, "account", "charge", "A-k2", "--amount", "40.00", "--reason", "bill", "--date", "2026-03-01")
    ok(capsys, "credit", "indigent", "add", "A-k3", "--evidence", "survey 12")
    assert "Customer A-k3 (A-k3)" in ok(capsys, "credit", "indigent", "list")
    ok(capsys, "credit", "dispute", "open", "A-k2", "--description", "never received the bill")
    out = ok(capsys, "credit", "run", "--date", "2026-03-12", "--out", "notices")
    assert "steps: reminder 1" in out and "on hold: dispute 1" in out
    assert (tmp_path / "notices" / "notices-2026-03-12.csv").exists()
    assert "case 1 A-k1: opened 2026-03-12, 1 step(s), last reminder 2026-03-12" in ok(capsys, "credit", "list")
    ok(
        capsys,
        "credit",
        "arrange",
        "A-k1",
        "--instalment",
        "2026-03-20:20.00",
        "--instalment",
        "2026-04-20:20.00",
        "--date",
        "2026-03-13",
    )
    with pytest.raises(SystemExit) as exc:
        main(["credit", "arrange", "A-k1", "--instalment", "2026-03-20"])
    assert exc.value.code == 2 and "an instalment is DATE:AMOUNT" in capsys.readouterr().err
    bad = tmp_path / "bad-credit.toml"
    bad.write_text("[credit]\nmin_overdue = -1\n")
    assert main(["credit", "run", "--config", str(bad)]) == 1
    assert "bad-credit.toml: credit.min_overdue" in capsys.readouterr().err

    out = ok(
        capsys,
        "work",
        "create",
        "--kind",
        "reading_anomaly",
        "--account",
        "A-k1",
        "--source",
        "meter reader",
        "--description",
        "dial fogged",
    )
    order = int(out.split()[2])
    ok(capsys, "work", "assign", str(order), "--to", "crew 4")
    ok(capsys, "work", "complete", str(order), "--outcome", "meter cleaned")
    assert "outcome meter cleaned" in ok(capsys, "work", "list", "--kind", "reading_anomaly")
    assert main(["work", "complete", str(order), "--outcome", "again"]) == 1
    assert "its outcome is recorded once" in capsys.readouterr().err
    ex = int(
        ok(
            capsys, "work", "create", "--kind", "meter_exchange", "--meter", "M-k2", "--description", "stuck register"
        ).split()[2]
    )
    ok(
        capsys,
        "work",
        "complete",
        str(ex),
        "--outcome",
        "exchanged",
        "--old-index",
        "88.5",
        "--new-meter",
        "NEW-9",
        "--new-index",
        "0",
    )
    assert f.one("SELECT removal_index FROM installation WHERE removed_at IS NOT NULL") == 88.5
    run = theft_list(f, ["M-k1", "M-k3"])
    assert "2 inspection order(s) created" in ok(capsys, "work", "from-theft", "--run", str(run), "--top", "5")
    insp = f.one("SELECT id FROM work_order WHERE kind = 'inspection' AND route_order = 1")
    out = ok(capsys, "work", "complete", str(insp), "--outcome", "fraud", "--campaign", "W11")
    assert "penalty 150.00 posted" in out and "theft outcome" in out and "follow-up order" in out
    assert "created" in ok(capsys, "work", "show", str(insp))
    assert "0 meter exchange / check order(s) created" in ok(capsys, "work", "from-vee")
    assert "0 order(s) completed" in ok(capsys, "work", "sync")
    assert "breach(es)" in ok(capsys, "work", "sla")
    assert main(["work", "assign", "9999", "--to", "x"]) == 1
    assert "no work order 9999" in capsys.readouterr().err

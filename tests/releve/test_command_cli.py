"""``releve command …`` through the real command line and database."""

from __future__ import annotations

import json

import pytest

from releve.cli import main

pytestmark = pytest.mark.db


@pytest.fixture
def env(db, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RELEVE_DATABASE_URL", db.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", db.settings.database.role_prefix)
    db.add_meters(["M-1", "M-2"])
    return db


def test_queue_list_show_cancel(env, capsys):
    assert (
        main(
            [
                "command",
                "queue",
                "M-1",
                "disconnect",
                "--by",
                "alice",
                "--reason",
                "arrears",
                "--work-order",
                "12",
                "--expires-in",
                "2h",
            ]
        )
        == 0
    )
    first = int(capsys.readouterr().out.strip())
    assert main(["command", "queue", "M-2", "clock_sync", "--by", "bob"]) == 0
    second = int(capsys.readouterr().out.strip())

    assert main(["command", "list", "--open"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["id", "meter", "kind", "state"]
    assert [line.split()[:4] for line in table[1:]] == [
        [str(second), "M-2", "clock_sync", "queued"],
        [str(first), "M-1", "disconnect", "queued"],
    ]
    assert main(["command", "list", "--meter", "M-1", "--json"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["id"], row["work_order_id"], row["requested_by"], row["reason"]) == (first, 12, "alice", "arrears")

    assert main(["command", "cancel", str(first), "--by", "alice", "--reason", "paid at the counter"]) == 0
    assert capsys.readouterr().out == f"command {first} (disconnect M-1) cancelled\n"
    assert main(["command", "show", str(first)]) == 0
    out = capsys.readouterr().out
    assert "state          cancelled" in out and "error          paid at the counter" in out
    audit = out.split("audit:\n")[1].splitlines()
    assert [line.split()[2:4] for line in audit] == [["queued", "alice"], ["cancelled", "alice"]]
    assert main(["command", "show", str(first), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [e["state"] for e in shown["events"]] == ["queued", "cancelled"]


def test_errors_go_to_stderr_with_the_exit_code(env, capsys):
    assert main(["command", "queue", "NOPE", "reconnect", "--by", "x"]) == 1
    assert capsys.readouterr().err == "releve command: no meter with serial 'NOPE'\n"
    assert main(["command", "cancel", "999", "--by", "x"]) == 1
    assert capsys.readouterr().err == "releve command: no meter command 999\n"
    assert main(["command", "show", "999"]) == 1
    assert main(["command", "queue", "M-1", "disconnect", "--by", "x"]) == 0
    command_id = capsys.readouterr().out.strip()
    with env.connect() as conn:
        conn.execute("UPDATE meter_command SET state = 'sent' WHERE id = %s", (int(command_id),))
    assert main(["command", "cancel", command_id, "--by", "x"]) == 1
    assert "is sent: only a queued command can be cancelled" in capsys.readouterr().err
    for argv in (
        ["command", "queue", "M-1", "explode"],
        ["command", "queue", "M-1", "disconnect", "--expires-in", "soon"],
        ["command"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    assert "is not a positive duration like 90s" in capsys.readouterr().err


def test_help_describes_every_action(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["command", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for action in ("queue", "list", "show", "cancel"):
        assert action in out

"""``releve dashboard adduser`` and ``releve dashboard screenshots``."""

import io
import struct

import pytest

from releve.cli import main

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings(r"ignore:\s*The dash_table.DataTable:DeprecationWarning")]


def test_adduser_reads_the_password_from_stdin_and_stores_only_a_hash(db, monkeypatch, capsys):
    monkeypatch.setenv("RELEVE_DATABASE_URL", db.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", db.settings.database.role_prefix)
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-enough\n"))
    assert main(["dashboard", "adduser", "ana", "--role", "fraud", "--role", "billing", "--password-stdin"]) == 0
    with db.connect() as conn:
        stored, roles = conn.execute(
            "SELECT password_hash, roles FROM dashboard_user WHERE username = 'ana'"
        ).fetchone()
    assert roles == ["billing", "fraud"] and stored.startswith("scrypt$") and "s3cret" not in stored
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["dashboard", "adduser", "bob", "--role", "fraud", "--password-stdin"]) == 1
    assert "at least 8 characters" in capsys.readouterr().err


def test_screenshots_command_writes_every_page_at_1440x900(filled, browser, tmp_path, monkeypatch):
    monkeypatch.setenv("RELEVE_DATABASE_URL", filled.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", filled.settings.database.role_prefix)
    monkeypatch.setenv("RELEVE_DASHBOARD_SECRET", "test")
    assert main(["dashboard", "screenshots", "--out", str(tmp_path), "--meter", "26000003"]) == 0
    for page in ("control-room", "meter", "fraud", "billing"):
        head = (tmp_path / f"{page}.png").read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1440, 900)
        assert (tmp_path / f"{page}-full.png").stat().st_size > 0
    assert filled.one("SELECT count(*) FROM dashboard_user WHERE username LIKE 'screenshots-%%'") == 0

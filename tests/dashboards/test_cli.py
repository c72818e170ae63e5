"""``releve dashboard adduser`` and ``releve dashboard screenshots``."""

import io
import struct

import pytest

from releve.cli import main

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings(r"ignore:\s*The dash_table.DataTable:DeprecationWarning")]


def test_adduser_passwd_deluser_keep_only_an_argon2id_hash(db, monkeypatch, capsys):
    from dashboards.auth import check_login

    monkeypatch.setenv("RELEVE_DATABASE_URL", db.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", db.settings.database.role_prefix)

    def run(*args, password=None):
        monkeypatch.setattr("sys.stdin", io.StringIO(f"{password}\n" if password else ""))
        return main(["dashboard", *args, *(["--password-stdin"] if password else [])])

    def stored(name):
        with db.connect() as conn:
            return conn.execute(
                "SELECT password_hash, roles FROM dashboard_user WHERE username = %s", (name,)
            ).fetchone()

    assert run("adduser", "ana", "--role", "fraud", "--role", "billing", password="s3cret-enough") == 0
    hash1, roles = stored("ana")
    assert roles == ["billing", "fraud"] and hash1.startswith("$argon2id$") and "s3cret" not in hash1
    assert run("adduser", "ana", "--role", "operator", password="other-secret-1") == 1
    assert "exists already" in capsys.readouterr().err
    assert run("adduser", "bob", "--role", "fraud", password="short") == 1
    assert "at least 10 characters" in capsys.readouterr().err
    assert run("passwd", "ana", password="a-new-secret-2") == 0  # roles kept
    hash2, roles = stored("ana")
    assert hash2 != hash1 and roles == ["billing", "fraud"]
    with db.connect() as conn:
        assert check_login(conn, "ana", "a-new-secret-2") and not check_login(conn, "ana", "s3cret-enough")
    assert run("passwd", "ana", "--role", "operator", password="a-new-secret-3") == 0
    assert stored("ana")[1] == ["operator"]
    assert run("passwd", "nobody", password="a-new-secret-3") == 1
    assert "no user nobody" in capsys.readouterr().err
    assert run("deluser", "ana") == 0 and stored("ana") is None
    assert run("deluser", "ana") == 1


def test_an_admin_of_before_0018_keeps_every_page_and_an_old_hash_still_logs_in(database_url, monkeypatch):
    """Migration 0018 adds the operator role; users who were admin (then every page) get every role."""
    import hashlib

    import psycopg

    from dashboards.auth import check_login
    from releve import migrate
    from releve.settings import Settings

    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    settings = Settings(database={"url": database_url, "role_prefix": name})
    every = migrate.discover
    monkeypatch.setattr(migrate, "discover", lambda: [m for m in every() if m.version < 18])
    migrate.upgrade(database_url, settings)
    salt = bytes(16)
    legacy = (
        f"scrypt$16384$8$1${salt.hex()}${hashlib.scrypt(b'old-password', salt=salt, n=2**14, r=8, p=1, dklen=32).hex()}"
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO dashboard_user (username, password_hash, roles) VALUES "
            "('boss', %s, '{admin}'), ('clerk', %s, '{billing}')",
            (legacy, legacy),
        )
    monkeypatch.setattr(migrate, "discover", every)
    applied = [m.version for m in migrate.upgrade(database_url, settings)]
    assert applied[0] == 18 and all(v > 18 for v in applied[1:])  # 0018, then any later migration
    with psycopg.connect(database_url, autocommit=True) as conn:
        roles = dict(conn.execute("SELECT username, roles FROM dashboard_user").fetchall())
        assert roles == {"boss": ["admin", "billing", "fraud", "operator"], "clerk": ["billing"]}
        assert check_login(conn, "clerk", "old-password").roles == ("billing",)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE dashboard_user SET roles = '{}' WHERE username = 'clerk'")


def test_the_field_role_exists_from_0022_and_nobody_gets_it_on_upgrade(database_url, monkeypatch):
    import psycopg

    from releve import migrate
    from releve.settings import Settings

    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    settings = Settings(database={"url": database_url, "role_prefix": name})
    every = migrate.discover
    monkeypatch.setattr(migrate, "discover", lambda: [m for m in every() if m.version < 22])
    migrate.upgrade(database_url, settings)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO dashboard_user (username, password_hash, roles) VALUES "
            "('boss', 'x', '{admin,billing,fraud,operator}'), ('clerk', 'x', '{billing}')"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE dashboard_user SET roles = '{field}' WHERE username = 'clerk'")
    monkeypatch.setattr(migrate, "discover", every)
    assert 22 in [m.version for m in migrate.upgrade(database_url, settings)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        roles = dict(conn.execute("SELECT username, roles FROM dashboard_user").fetchall())
        assert roles == {"boss": ["admin", "billing", "fraud", "operator"], "clerk": ["billing"]}  # given to nobody
        conn.execute("UPDATE dashboard_user SET roles = '{field,operator}' WHERE username = 'clerk'")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE dashboard_user SET roles = '{dispatcher}' WHERE username = 'clerk'")


def test_screenshots_command_writes_every_page_at_1440x900(filled, browser, tmp_path, monkeypatch):
    monkeypatch.setenv("RELEVE_DATABASE_URL", filled.url)
    monkeypatch.setenv("RELEVE_DATABASE__ROLE_PREFIX", filled.settings.database.role_prefix)
    monkeypatch.setenv("RELEVE_DASHBOARD_SECRET", "test")
    assert main(["dashboard", "screenshots", "--out", str(tmp_path), "--meter", "26000003"]) == 0
    for page in ("control-room", "meter", "fraud", "billing", "accounts", "account", "field", "users"):
        head = (tmp_path / f"{page}.png").read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1440, 900)
        assert (tmp_path / f"{page}-full.png").stat().st_size > 0
    assert filled.one("SELECT count(*) FROM dashboard_user WHERE username LIKE 'screenshots-%%'") == 0


def test_releve_dashboard_serves_with_waitress_on_the_configured_address(filled, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from dashboards.browser import free_port

    port = free_port()
    env = {
        **os.environ,
        "RELEVE_DATABASE_URL": filled.url,
        "RELEVE_DATABASE__ROLE_PREFIX": filled.settings.database.role_prefix,
        "RELEVE_DASHBOARD__PORT": str(port),
        "RELEVE_DASHBOARD_SECRET_FILE": str(tmp_path / "secret"),
    }
    env.pop("RELEVE_DASHBOARD_SECRET", None)  # set by the app fixture of other tests: the file is wanted here
    proc = subprocess.Popen(
        [sys.executable, "-m", "releve.cli", "dashboard"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5) as reply:
                    headers = reply.headers
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None and time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.5)
        assert headers["X-Frame-Options"] == "DENY" and "Server" not in headers  # waitress, told not to say so
        assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_dash-layout", timeout=5)
    finally:
        # SIGTERM, as a service manager stops it (SIGINT may be inherited as ignored by a background run)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert f"dashboards on http://127.0.0.1:{port}/" in err and "Traceback" not in err
    assert proc.returncode == 0  # a clean stop, not a kill

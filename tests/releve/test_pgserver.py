"""The embedded PostgreSQL lets nobody in without its password, kept in a 0600 libpq password file."""

import os
import re
import stat
import subprocess

import psycopg
import pytest

from releve.pgserver import PostgresServer, ServerError

pytestmark = pytest.mark.db


def psql(server, *extra, env=None, as_account=False):
    """Run the server's own psql against it, never prompting for a password (-w)."""
    kwargs = {}
    if as_account and server.account is not None:
        kwargs = {"user": server.account.pw_uid, "group": server.account.pw_gid}
    return subprocess.run(
        [
            str(server.bin_dir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "-w",
            "-d",
            "postgres",
            "-At",
            "-c",
            "SELECT current_user",
            *extra,
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **(env or {})},
        cwd="/",
        timeout=60,
        check=False,
        **kwargs,
    )


@pytest.fixture
def server(service_tmp):
    srv = PostgresServer(service_tmp / "pg", durable=False)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_psql_without_the_password_is_refused_and_with_it_accepted(server):
    for as_account in (False, True):  # as the user who started it, and as the account the server runs as
        refused = psql(server, as_account=as_account)
        assert refused.returncode != 0
        assert "no password supplied" in refused.stderr or "password authentication failed" in refused.stderr
    wrong = psql(server, env={"PGPASSWORD": "postgres"})
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    ok = psql(server, env={"PGPASSFILE": str(server.password_file)})
    assert ok.returncode == 0 and ok.stdout.strip() == "postgres", ok.stderr
    with psycopg.connect(server.url()) as conn:  # the URL names the file, not the password
        assert conn.execute("SELECT current_user").fetchone()[0] == "postgres"
    password = server.password_file.read_text().split(":")[-1].strip()
    assert password not in server.url() and "passfile=" in server.url()
    assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600
    assert server.password_file.stat().st_uid == os.geteuid()
    hba = (server.data_dir / "pg_hba.conf").read_text()
    rules = [line for line in hba.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert rules and all(line.split()[-1] == "scram-sha-256" for line in rules)


def test_a_cluster_created_with_trust_gets_a_password_at_its_next_start(server):
    # What an older Relevé left: trust everywhere and no password file.
    hba = server.data_dir / "pg_hba.conf"
    hba.write_text(re.sub(r"scram-sha-256\s*$", "trust", hba.read_text(), flags=re.MULTILINE))
    server.password_file.unlink()
    server.stop()
    server.start()
    assert server.password_file.is_file()
    assert psql(server).returncode != 0
    with psycopg.connect(server.url()) as conn:
        assert conn.execute("SHOW password_encryption").fetchone()[0] == "scram-sha-256"


def test_a_lost_password_file_is_reported_not_bypassed(server):
    server.password_file.unlink()
    from releve.pgserver import ServerError

    with pytest.raises(ServerError, match="pgpass is missing"):
        server.start()


def _data_directory(srv: PostgresServer) -> str:
    with psycopg.connect(srv.url()) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None
    return str(row[0])


def test_a_copied_data_directory_whose_port_another_server_holds_starts_on_a_port_of_its_own(server, service_tmp):
    # A copy of a data directory records its original's port: with the original running, the copy
    # must neither count as running nor hand out a URL that reaches the original's data.
    copy = PostgresServer(service_tmp / "copy", durable=False)
    copy.initialise()
    with (copy.data_dir / "postgresql.auto.conf").open("a") as fh:
        fh.write(f"port = {server.port}\n")
    copy = PostgresServer(service_tmp / "copy", durable=False)
    assert copy.port == server.port
    assert not copy.is_running()
    copy.start()
    try:
        assert copy.port != server.port
        assert copy.is_running() and server.is_running()
        assert _data_directory(copy) == str(copy.data_dir)
        assert _data_directory(server) == str(server.data_dir)
        again = PostgresServer(service_tmp / "copy", durable=False)  # a later command finds it where it moved
        assert again.port == copy.port and again.is_running()
    finally:
        copy.stop()
    assert not copy.is_running() and server.is_running()


def test_a_port_chosen_by_the_caller_that_another_server_holds_is_refused(server, service_tmp):
    other = PostgresServer(service_tmp / "other", port=server.port, durable=False)
    with pytest.raises(ServerError, match=f"port {server.port} is taken"):
        other.start()
    assert _data_directory(server) == str(server.data_dir)

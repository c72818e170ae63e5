"""Fixtures on real servers.

``pg_server_url``: a PostgreSQL server for the whole session — the one named by
``RELEVE_TEST_DATABASE_URL`` (a URL whose user may create databases and roles), or a throwaway
server started here on a free port in a temporary directory (as an unprivileged user when the suite
runs as root), stopped and deleted at the end.

``database_url``: a fresh, empty database for one test, dropped afterwards (with the roles the test
created). ``db``: the same, migrated to the latest schema, with settings pointing at it.

``replicated``: a primary and a streaming replica of it (``pg_basebackup -R``), replicated
synchronously, with the schema migrated; its ``url`` names both servers (``target_session_attrs=
read-write``) as production settings do for failover.

``shard_urls``: three throwaway shard servers, each with a migrated ``releve`` database; ``db`` is
their coordinator (docs/scaling.md, sharding by meter).

``mqtt_broker``: a throwaway broker (Mosquitto when installed, amqtt otherwise) on a free port.

Tests that need none of these (pure logic) start nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from releve.broker import MqttBroker
from releve.pgserver import PostgresServer
from releve.settings import Settings


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server (maintenance database) the suite may create databases on."""
    external = os.environ.get("RELEVE_TEST_DATABASE_URL")
    if external:
        yield external
        return
    root = Path(tempfile.mkdtemp(prefix="releve-test-pg-"))
    root.chmod(0o755)  # the unprivileged server user must reach its data directory
    server = PostgresServer(root / "data", durable=False)
    server.start()
    try:
        yield server.url("postgres")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _with_dbname(url: str, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh empty database, dropped (with any roles named after it) when the test ends."""
    name = f"releve_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(pg_server_url, name)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            roles = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (f"{name}%",)).fetchall()
            for (role,) in roles:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def mqtt_broker() -> Iterator[MqttBroker]:
    """A throwaway MQTT broker on a free port of 127.0.0.1."""
    data_dir = Path(tempfile.mkdtemp(prefix="releve-test-mqtt-"))
    data_dir.chmod(0o755)  # Mosquitto drops root privileges and must reach its persistence directory
    broker = MqttBroker(data_dir=data_dir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


class MigratedDatabase:
    """A fresh database at the latest schema, and settings that point at it."""

    def __init__(self, url: str) -> None:
        from releve import migrate
        from releve.settings import Settings

        self.url = url
        dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        # Roles are per server, so each test database gets roles named after itself (dropped with it).
        self.settings = Settings(database={"url": url, "role_prefix": dbname})  # type: ignore[arg-type]
        migrate.upgrade(url, self.settings)

    def connect(self, role: str | None = None) -> psycopg.Connection:
        """A connection as the test's superuser, or switched to ``role``."""
        from releve.db import connect

        return connect(self.url, role=role, autocommit=True)

    def add_meters(self, serials: list[str], commodity: str = "electricity", unit: str = "kWh") -> None:
        """Register meters (a minimal registry for ingest tests)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, %s, 'test', %s, 'import')",
                [(s, commodity, unit) for s in serials],
            )


@pytest.fixture
def db(database_url: str) -> MigratedDatabase:
    """A fresh database migrated to the latest schema."""
    return MigratedDatabase(database_url)


@pytest.fixture
def shard_urls(service_tmp: Path, db: MigratedDatabase) -> Iterator[list[str]]:
    """Three throwaway shard servers, each with a migrated ``releve`` database (roles named as the coordinator's)."""
    from releve import migrate

    servers = [PostgresServer(service_tmp / f"shard{k}", durable=False) for k in range(3)]
    try:
        urls = []
        for server in servers:
            server.start()
            with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
                conn.execute("CREATE DATABASE releve")
            migrate.upgrade(server.url("releve"), db.settings)
            urls.append(server.url("releve"))
        yield urls
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def service_tmp() -> Iterator[Path]:
    """A temporary directory that unprivileged service users (PostgreSQL, Mosquitto) can reach."""
    path = Path(tempfile.mkdtemp(prefix="releve-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class ReplicatedPair:
    """A primary, its synchronous streaming replica, and settings that reach whichever is primary."""

    primary: PostgresServer
    replica: PostgresServer
    url: str  # both servers, read-write sessions only
    settings: Settings

    def server_url(self, server: PostgresServer) -> str:
        """The URL of one server's ``releve`` database."""
        return server.url("releve")


def multi_host_url(servers: list[PostgresServer], dbname: str = "releve", **params: str) -> str:
    """One libpq URL naming every server (they share the superuser's password file)."""
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    query = "&".join(f"{k}={v}" for k, v in {"passfile": servers[0].password_file, **params}.items())
    return f"postgresql://postgres@{hosts}/{dbname}?{query}"


@pytest.fixture
def replicated(service_tmp: Path) -> Iterator[ReplicatedPair]:
    """A migrated primary and its streaming replica; commits wait for the replica (no loss on failover)."""
    from releve import migrate

    primary = PostgresServer(service_tmp / "primary", durable=False)
    replica: PostgresServer | None = None
    primary.start()
    try:
        with psycopg.connect(primary.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE releve")
        settings = Settings(database={"url": primary.url("releve")})  # type: ignore[arg-type]
        migrate.upgrade(primary.url("releve"), settings)
        replica = primary.replica(service_tmp / "replica", name="replica")
        replica.start()
        with psycopg.connect(primary.url("postgres"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'replica'")
            conn.execute("ALTER SYSTEM SET synchronous_commit = 'on'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 30
            while not conn.execute(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = 'replica' AND sync_state = 'sync'"
            ).fetchone():
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not become a synchronous standby within 30 s")
                time.sleep(0.1)
        url = multi_host_url([primary, replica], target_session_attrs="read-write", connect_timeout="3")
        settings = Settings(database={"url": url})  # type: ignore[arg-type]
        yield ReplicatedPair(primary, replica, url, settings)
    finally:
        if replica is not None:
            replica.stop()
        if primary.is_running():
            primary.stop()

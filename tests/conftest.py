"""Fixtures on real servers.

``pg_server_url``: a PostgreSQL server for the whole session — the one named by
``RELEVE_TEST_DATABASE_URL`` (a URL whose user may create databases and roles), or a throwaway
server started here on a free port in a temporary directory (as an unprivileged user when the suite
runs as root), stopped and deleted at the end. Under pytest-xdist (``./run-tests`` runs two
workers) each worker process has its own session, so its own throwaway server.

``database_url``: a fresh, empty database for one test, dropped afterwards (with the roles named
after it, which a test migrating it itself creates).

``db``: a fresh database at the latest schema, with settings pointing at it, dropped afterwards. It
is a copy (``CREATE DATABASE … TEMPLATE``) of a template database migrated once per session and
server (``database_templates``, class ``DatabaseTemplates``): copying takes hundredths of a second
where running every migration took most of a second. The copies share the template's roles
(``releve_tpl_<random>_writer``, ``_reader``, ``_editor``, ``_owner``, named by ``db.settings``):
roles are per server and a copy keeps the template's grants. ``db_from_scratch``: the same, but
migrated from an empty database by the test's own setup, with roles named after it — for the tests
of the migrations themselves. Larger starting points are templates too, filled once per session and
copied for each module or test: the dashboards' fleet (tests/dashboards/conftest.py, ``filled``) and
the theft tests' 90 days (``loaded`` in tests/analytics/theft/test_store_db.py).

``replicated``: a primary and a streaming replica of it (``pg_basebackup -R``), replicated
synchronously, with the schema migrated; its ``url`` names both servers (``target_session_attrs=
read-write``) as production settings do for failover.

``shard_urls``: three throwaway shard servers, each with a migrated ``releve`` database; ``db`` is
their coordinator (docs/scaling.md, sharding by meter).

``mqtt_broker``: a throwaway broker (Mosquitto when installed, amqtt otherwise) on a free port.

Tests that need none of these (pure logic) start nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
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


def _new_database_name() -> str:
    return f"releve_test_{uuid.uuid4().hex[:12]}"


def _drop_roles(conn: psycopg.Connection, prefix: str) -> None:
    """Drop the roles whose names start with ``prefix``."""
    pattern = prefix.replace("_", r"\_") + "%"
    for (role,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (pattern,)).fetchall():
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _drop_database(server_url: str, name: str) -> None:
    """Drop a test's database, and any roles named after it."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        _drop_roles(conn, name)


@pytest.fixture
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh empty database, dropped (with any roles named after it) when the test ends."""
    name = _new_database_name()
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(pg_server_url, name)
    finally:
        _drop_database(pg_server_url, name)


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

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        """Migrate the database at ``url``: from scratch, with roles named after it, or, given the ``settings``
        of a copy of the migrated template, with that template's roles."""
        from releve import migrate

        self.url = url
        if settings is None:
            dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
            # Roles are per server, so a database migrated here gets roles named after itself (dropped with it).
            settings = Settings(database={"url": url, "role_prefix": dbname})  # type: ignore[arg-type]
        self.settings = settings
        # On a copy no migration is left to apply: this only checks them and runs the upkeep that ends every
        # upgrade (partitions from last month to the months ahead of now), as ``releve db upgrade`` would.
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


class DatabaseTemplates:
    """Databases built once per server and session, and copies of them for tests (``CREATE DATABASE … TEMPLATE``).

    Running every migration for each test costs far more than copying a database already migrated,
    so the first test that needs one migrates a template database, and every later test gets a copy
    of it: the same schema, data and object grants, made by the server in a few hundredths of a
    second. Other templates (the dashboards' filled database) start as a copy of that one.

    Roles are per server, not per database, and a copy keeps the template's grants: its objects
    belong to the template's owner role and are granted to the template's writer, reader and editor
    roles. So every template and copy of one server shares one role prefix, ``releve_tpl_<random>``,
    and a copy's settings name it. No test alters or drops these roles; a test that needs roles of
    its own, or migrations run from scratch, takes ``db_from_scratch`` or ``database_url``. What a
    copy does not inherit, its database-level grants (``GRANT CONNECT, TEMPORARY ON DATABASE``), is
    granted again from the template's.
    """

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.role_prefix = f"releve_tpl_{uuid.uuid4().hex[:12]}"
        self._made: dict[str, str] = {}  # template kind → database name

    def settings(self, url: str) -> Settings:
        """Settings for a copy (or a template) at ``url``: the shared role prefix."""
        return Settings(database={"url": url, "role_prefix": self.role_prefix})  # type: ignore[arg-type]

    def template(self, kind: str, build: Callable[[str, Settings], object], base: str | None = None) -> str:
        """The name of the ``kind`` template, made on first use: a copy of the template ``base`` (or an empty
        database) that ``build(url, settings)`` completes, leaving no connection to it open (the server copies
        only a database nobody is connected to)."""
        if kind not in self._made:
            name = f"{self.role_prefix}_{kind}"
            self._create(name, base)
            self._made[kind] = name  # before building: a failed build is dropped with the others
            url = _with_dbname(self.server_url, name)
            build(url, self.settings(url))
        return self._made[kind]

    @contextlib.contextmanager
    def copy(self, template: str) -> Iterator[MigratedDatabase]:
        """A new database copied from the template database ``template``, dropped at the end."""
        name = _new_database_name()
        self._create(name, template)
        try:
            url = _with_dbname(self.server_url, name)
            yield MigratedDatabase(url, self.settings(url))
        finally:
            _drop_database(self.server_url, name)

    def migrated(self) -> str:
        """The template at the latest schema (migrated once, from scratch)."""
        from releve import migrate

        return self.template("migrated", migrate.upgrade)

    def _create(self, name: str, template: str | None) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            if template is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                return
            # FILE_COPY copies the template's files (its checkpoints are cheap on the test servers, which run
            # without fsync); the default, WAL_LOG, writes every page of it through the WAL, slower for the
            # larger templates.
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
            grants = conn.execute(
                """SELECT a.privilege_type, a.grantee::regrole::text
                   FROM pg_database d, aclexplode(d.datacl) a
                   WHERE d.datname = %s AND a.grantee <> 0 AND a.grantee <> d.datdba""",
                (template,),
            ).fetchall()
            for privilege, grantee in grants:
                conn.execute(
                    sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                        sql.SQL(privilege), sql.Identifier(name), sql.SQL(grantee)
                    )
                )

    def drop_all(self) -> None:
        """Drop the templates, then the roles they share."""
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            for name in reversed(self._made.values()):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            _drop_roles(conn, self.role_prefix)


@pytest.fixture(scope="session")
def database_templates(pg_server_url: str) -> Iterator[DatabaseTemplates]:
    """The session server's template databases (made on first use), dropped with their roles at the end."""
    templates = DatabaseTemplates(pg_server_url)
    try:
        yield templates
    finally:
        templates.drop_all()


@pytest.fixture
def db(database_templates: DatabaseTemplates) -> Iterator[MigratedDatabase]:
    """A fresh database at the latest schema: a copy of the session's migrated template."""
    with database_templates.copy(database_templates.migrated()) as copy:
        yield copy


@pytest.fixture
def db_from_scratch(database_url: str) -> MigratedDatabase:
    """A fresh database migrated here from empty, for the tests of the migrations themselves."""
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

"""One database for the dashboard tests: a simulated fleet through ingest and VEE, the daily aggregate, a theft
ranking, bills (one held per cycle) and a login per role, filled once per session as a template database of
which each module gets its own copy; plus the app served by waitress from a thread and a headless Chromium."""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from datetime import date
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from releve.db import connect, reader_role
from releve.migrate import role_names
from releve.settings import Settings
from tests.conftest import DatabaseTemplates

FLEET = {
    "seed": 5,
    "horizon_days": 40,
    "start": "2026-02-01T00:00:00Z",
    "topology": {"transformers": 2, "customers_per_transformer": 8, "dmas": 1, "customers_per_dma": 5},
    "faults": {"rate": 0.4, "min_days": 1, "max_days": 3},
    "theft": {"rate": 0.3},
    "modbus": {"tcp_base_port": 0},
}
USERS = {
    "operator1": ("operator-pass-123", ["operator"]),
    "fraud1": ("fraud-pass-123", ["fraud"]),
    "billing1": ("billing-pass-123", ["billing"]),
    "field1": ("field-pass-123", ["field"]),
    "admin1": ("admin-pass-123", ["admin"]),
    "locked1": ("locked-pass-123", ["operator"]),
}


class FilledDatabase:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url, self.settings = url, settings

    def one(self, query, params=None):
        with connect(self.url) as conn:
            return conn.execute(query, params).fetchone()[0]


def add_bills(url: str, settings) -> None:
    """A real bill run of every cycle over the loaded history (the example tariff file)."""
    from billing.run import run_bills
    from billing.tariffs import load_tariffs

    book = load_tariffs(Path(__file__).resolve().parents[2] / "billing" / "tariffs.example.toml")
    with connect(url) as conn:
        cycles = [c for (c,) in conn.execute("SELECT DISTINCT billing_cycle FROM account ORDER BY 1")]
    for cycle in cycles:
        run_bills(url, settings, book, cycle, date(2026, 3, 4), issue_date=date(2026, 3, 5))


def fill(url: str, settings: Settings, backfill_dir: Path) -> None:
    """Fill a migrated database: the fleet through ingest and VEE, logins, a theft ranking and bills."""
    from analytics.theft import store
    from analytics.theft.ranking import score
    from analytics.vee.run import run_vee
    from dashboards.auth import add_user
    from ingest.importer import load_directory
    from simulators.backfill import backfill
    from simulators.config import parse_fleet
    from simulators.engine import Simulation

    backfill(Simulation(parse_fleet(FLEET, "dashboard test fleet")), 35, backfill_dir, progress=False)
    load_directory(url, settings, backfill_dir)
    run_vee(url, settings)
    with connect(url, autocommit=True) as conn:
        for user, (password, roles) in USERS.items():
            add_user(conn, user, password, roles)
    with connect(url, role=reader_role(settings)) as conn:
        data = store.load_from_database(conn, None, None, 365)
    store.save_run(settings, url, score(data).candidates(40), "database", {}, data)
    add_bills(url, settings)


@pytest.fixture(scope="module")
def filled(database_templates: DatabaseTemplates, tmp_path_factory):
    """The module's own copy of the filled database (filled once per session, as a template: tests may change
    their copy)."""
    template = database_templates.template(
        "dashboards",
        lambda url, settings: fill(url, settings, tmp_path_factory.mktemp("dash-backfill")),
        base=database_templates.migrated(),
    )
    with database_templates.copy(template) as copy:
        yield FilledDatabase(copy.url, copy.settings)


@pytest.fixture(scope="module")
def app(filled, tmp_path_factory):
    from dashboards.app import create_app

    os.environ.setdefault("RELEVE_DASHBOARD_SECRET", "test-secret-" + uuid.uuid4().hex)
    application = create_app(filled.url, filled.settings, refresh_ms=3_600_000)
    yield application
    application.queries.close()


@pytest.fixture(scope="module")
def base_url(app):
    from dashboards.browser import serve_in_thread

    with serve_in_thread(app.server) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which("chromium") or os.path.exists("/usr/bin/chromium")) or not (
        shutil.which("chromedriver") or os.path.exists("/usr/bin/chromedriver")
    ):
        pytest.skip("Debian chromium and chromium-driver are not installed")
    pytest.importorskip("selenium")
    from dashboards.browser import chromium

    with chromium(1440, 900) as driver:
        yield driver


@pytest.fixture
def web_url(filled):
    """A login that may only become the reader and editor roles, as the dashboards run in production."""
    dbname = psycopg.conninfo.conninfo_to_dict(filled.url)["dbname"]
    login, password = f"{dbname}_web", secrets.token_urlsafe(16)
    _, reader, editor = role_names(filled.settings)
    with psycopg.connect(filled.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOINHERIT PASSWORD {}").format(sql.Identifier(login), sql.Literal(password))
        )
        conn.execute(
            sql.SQL("GRANT {}, {} TO {}").format(sql.Identifier(reader), sql.Identifier(editor), sql.Identifier(login))
        )
    info = psycopg.conninfo.conninfo_to_dict(filled.url)
    info.pop("passfile", None)
    info.update(user=login, password=password)
    yield psycopg.conninfo.make_conninfo(**info)
    with psycopg.connect(filled.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))

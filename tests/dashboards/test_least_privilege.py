"""The dashboards run as a login that may only become the reader and editor roles (docs/operations.md)."""

import re
import secrets

import psycopg
import pytest
from psycopg import sql

from releve.migrate import role_names

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings(r"ignore:\s*The dash_table.DataTable:DeprecationWarning")]


@pytest.fixture
def web_url(filled):
    dbname = psycopg.conninfo.conninfo_to_dict(filled.url)["dbname"]
    login, password = f"{dbname}_web", secrets.token_urlsafe(16)
    _, reader, editor = role_names(filled.settings)
    with psycopg.connect(filled.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT PASSWORD {}").format(
            sql.Identifier(login), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT {}, {} TO {}").format(
            sql.Identifier(reader), sql.Identifier(editor), sql.Identifier(login)))
    info = psycopg.conninfo.conninfo_to_dict(filled.url)
    info.pop("passfile", None)
    info.update(user=login, password=password)
    yield psycopg.conninfo.make_conninfo(**info)
    with psycopg.connect(filled.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))


def test_the_dashboards_work_as_a_reader_editor_login_that_reads_nothing_by_itself(filled, web_url):
    from dashboards.app import create_app
    from dashboards.cli import _schema_current

    with psycopg.connect(web_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT name FROM customer LIMIT 1")  # nothing without SET ROLE
    assert _schema_current(web_url, filled.settings)  # so `releve dashboard` does not try to migrate
    app = create_app(web_url, filled.settings, refresh_ms=3_600_000)
    try:
        client = app.server.test_client()
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
        reply = client.post("/login", data={"csrf": csrf, "next": "/fraud", "username": "fraud1",
                                            "password": "fraud-pass-123"})
        assert reply.status_code == 302 and reply.headers["Location"] == "/fraud"
        body = {"output": "fr-balance.figure", "outputs": {"id": "fr-balance", "property": "figure"},
                "inputs": [{"id": "fr-balance-area", "property": "value", "value": "T001"}], "changedPropIds": []}
        answer = client.post("/_dash-update-component", json=body)
        assert answer.status_code == 200 and "Energy balance of T001" in answer.get_data(as_text=True)
        assert sum(app.queries.snapshot(fresh=True).counts().values()) == filled.one("SELECT count(*) FROM meter")
    finally:
        app.queries.close()

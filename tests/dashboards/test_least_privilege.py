"""The dashboards run as a login that may only become the reader and editor roles (docs/operations.md)."""

import re

import psycopg
import pytest

pytestmark = [pytest.mark.db, pytest.mark.filterwarnings(r"ignore:\s*The dash_table.DataTable:DeprecationWarning")]


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
        reply = client.post(
            "/login", data={"csrf": csrf, "next": "/fraud", "username": "fraud1", "password": "fraud-pass-123"}
        )
        assert reply.status_code == 302 and reply.headers["Location"] == "/fraud"
        body = {
            "output": "fr-balance.figure",
            "outputs": {"id": "fr-balance", "property": "figure"},
            "inputs": [{"id": "fr-balance-area", "property": "value", "value": "T001"}],
            "changedPropIds": [],
        }
        answer = client.post("/_dash-update-component", json=body)
        assert answer.status_code == 200 and "Energy balance of T001" in answer.get_data(as_text=True)
        assert sum(app.queries.snapshot(fresh=True).counts().values()) == filled.one("SELECT count(*) FROM meter")
    finally:
        app.queries.close()

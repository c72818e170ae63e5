"""Server-side tables (filter → WHERE over whitelisted columns), logins, and the queries behind the pages."""

import csv
import hashlib
import io

import pytest

from dashboards.auth import ROLES, AuthError, add_user, allowed, hash_password, page_role, pages_for, verify_password
from dashboards.queries_base import STATES
from dashboards.tables import Column, TableSpec, filter_sql, like_prefix, order_sql

SPEC = TableSpec(
    "meter m",
    {"serial": Column("m.serial"), "id": Column("m.id", "number"), "created": Column("m.created_at", "datetime")},
    "m.id",
)


def test_filters_become_parameters_over_whitelisted_columns_only():
    params = {}
    where = filter_sql(SPEC, '{serial} contains "26%0" && {id} >= 3 && {model} = x && {id} s< 10', params)
    assert where == "(m.serial)::text ILIKE %(f0)s AND (m.id) >= %(f1)s AND (m.id) < %(f3)s"
    assert params == {"f0": "%26\\%0%", "f1": 3.0, "f3": 10.0}
    # an unknown column, a bad number or SQL in the value never reaches the query text
    params = {}
    assert filter_sql(SPEC, "{id} > 1;drop && {x; drop table meter} = 1", params) == "true"
    assert filter_sql(SPEC, '{serial} = "a\'; drop table meter; --"', params) == "(m.serial)::text ILIKE %(f0)s"
    assert (
        order_sql(SPEC, [{"column_id": "id; drop", "direction": "asc"}, {"column_id": "serial", "direction": "desc"}])
        == "m.serial DESC NULLS LAST, m.id"
    )


def test_passwords_are_salted_argon2id_and_old_scrypt_hashes_still_verify():
    h1, h2 = hash_password("correct horse"), hash_password("correct horse")
    assert h1 != h2 and h1.startswith("$argon2id$") and "correct" not in h1
    assert verify_password("correct horse", h1) and not verify_password("wrong", h1)
    assert not verify_password("x", "garbage") and not verify_password("x", "scrypt$garbage")
    salt = bytes(range(16))  # a hash as migration 0010 wrote it
    legacy = (
        f"scrypt$16384$8$1${salt.hex()}${hashlib.scrypt(b'old password', salt=salt, n=2**14, r=8, p=1, dklen=32).hex()}"
    )
    assert verify_password("old password", legacy) and not verify_password("old passwore", legacy)


def test_each_role_opens_its_own_pages_only():
    assert page_role("/") == page_role("/meter") == page_role("/meter/26000001/") == "operator"
    assert (page_role("/fraud"), page_role("/billing"), page_role("/users"), page_role("/nope")) == (
        "fraud",
        "billing",
        "admin",
        None,
    )
    for path in ("/", "/meter/1", "/fraud", "/billing", "/users"):
        assert not allowed(None, path) and not allowed([], path)
    assert allowed(["operator"], "/meter/1") and not allowed(["operator"], "/fraud")
    assert allowed(["fraud"], "/fraud") and not allowed(["fraud"], "/") and not allowed(["fraud"], "/billing")
    assert allowed(["admin"], "/users") and not any(allowed(["admin"], p) for p in ("/", "/fraud", "/billing"))
    assert [p for p, _ in pages_for(["billing", "operator"])] == ["/", "/meter", "/billing", "/accounts"]


def test_accounts_open_with_billing_and_field_work_with_the_field_role():
    from dashboards import cli

    assert cli.ROLES == ROLES  # the command line offers the roles the app knows
    assert page_role("/accounts") == page_role("/accounts/ACC-1") == page_role("/accounts/ACC-1/") == "billing"
    assert page_role("/field") == "field" and page_role("/field/x") is None
    assert allowed(["field"], "/field") and not any(allowed(["field"], p) for p in ("/", "/fraud", "/accounts"))
    assert not allowed(["billing"], "/field") and not allowed(["operator"], "/accounts/ACC-1")
    assert [p for p, _ in pages_for(["billing", "field"])] == ["/billing", "/accounts", "/field"]


@pytest.mark.parametrize(
    ("name", "password", "roles", "message"),
    [
        ("ana", "short", ["fraud"], "at least 10 characters"),
        ("ana", "ANA", ["fraud"], "at least 10"),
        ("anastasia1", "Anastasia1", ["fraud"], "must not be the user name"),
        ("ana; drop", "long-enough-1", ["fraud"], "user names are"),
        ("ana", "long-enough-1", ["root"], "roles must be among"),
        ("ana", "long-enough-1", [], "roles must be among"),
    ],
)
def test_weak_or_malformed_users_are_refused_before_the_database(name, password, roles, message):
    with pytest.raises(AuthError, match=message):
        add_user(None, name, password, roles)


@pytest.mark.db
def test_queries_page_sort_and_count_on_the_server(filled, app):
    q = app.queries
    n_meters = filled.one("SELECT count(*) FROM meter")
    rows, total = q.meter_page(1, 5, [{"column_id": "serial", "direction": "desc"}], "")
    assert total == n_meters and len(rows) == 5
    assert [r["serial"] for r in rows] == sorted([r["serial"] for r in rows], reverse=True)
    rows, total = q.meter_page(0, 50, None, "{area} = DMA001")
    assert (
        total
        == filled.one(
            "SELECT count(*) FROM meter m JOIN installation i ON i.meter_id = m.id AND i.removed_at IS NULL "
            "JOIN service_point sp ON sp.id = i.service_point_id JOIN area a ON a.id = sp.area_id "
            "WHERE a.code = 'DMA001'"
        )
        + 1
    )  # + the DMA's bulk meter
    snap = q.snapshot(fresh=True)
    assert sum(snap.counts().values()) == n_meters
    exact, _ = q.meter_page(0, n_meters, [{"column_id": "state", "direction": "asc"}], "")  # every meter probed
    assert {r["serial"]: r["state"] for r in q.fleet_rows()[1]} == {r["serial"]: r["state"] for r in exact}
    assert snap.counts() == {s: sum(r["state"] == s for r in exact) for s in STATES}
    _, total = q.review_queue(0, 10, None, "{rule} = NEGATIVE")
    assert total == filled.one(
        "SELECT count(*) FROM vee_exception WHERE rule = 'NEGATIVE' AND status = 'open' AND severity <> 'info'"
    )
    assert q.open_exception_count() == filled.one(
        "SELECT count(*) FROM vee_exception WHERE status = 'open' AND severity <> 'info'"
    )
    serial = filled.one("SELECT serial FROM meter WHERE commodity = 'electricity' ORDER BY id OFFSET 2 LIMIT 1")
    info = q.find_meter(serial)
    hist, total = q.index_history(info["id"], "1-0:1.8.0", 0, 10, None, "")
    assert total == filled.one(
        "SELECT count(*) FROM reading_all r JOIN channel c ON c.id = r.channel_id "
        "WHERE r.meter_id = %s AND c.code = '1-0:1.8.0'",
        (info["id"],),
    )
    assert hist[0]["ts"] > hist[-1]["ts"]  # newest first, like the utility's table
    assert abs(float(hist[0]["usage"]) - (float(hist[0]["index"]) - float(hist[1]["index"]))) < 1e-6


@pytest.mark.db
def test_the_meter_and_account_pickers_take_the_typed_text_as_a_literal_prefix(filled, app):
    assert like_prefix("ab%c_d") == "abcd%"
    q = app.queries
    serial = filled.one("SELECT serial FROM meter ORDER BY serial LIMIT 1")
    found = q.search_meters(serial[:3], 500)
    assert serial in found and all(s.startswith(serial[:3]) for s in found)
    assert q.search_meters("_", 5) == q.search_meters("", 5) == sorted(q.search_meters("", 5))
    number = filled.one("SELECT number FROM account ORDER BY number LIMIT 1")
    assert q.accounts.find_accounts(number[:3], 1) == [number]
    assert q.accounts.find_accounts(number + "%", 5)[0] == number  # the % typed is not a wildcard


@pytest.mark.db
def test_tonights_route_is_the_top_unvisited_candidates_in_route_order(filled, app):
    run = filled.one("SELECT max(id) FROM theft_run")
    text = app.queries.route(run, 5)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 5 and [r["route_order"] for r in rows] == ["1", "2", "3", "4", "5"]
    top = {r[0] for r in [(filled.one("SELECT serial FROM theft_candidate WHERE run_id = %s AND rank = 1", (run,)),)]}
    assert top <= {r["meter"] for r in rows}
    balance = app.queries.energy_balance("T001")
    assert balance and all(r["feeder"] is not None and r["customers"] is not None for r in balance)

"""Billing: why an account got no bill, or a bill with a warning, stored per account and run.

Until now a bill run left only ``bill_run.n_skipped``: the reason an account was skipped (an
unknown tariff code, no meter installed, an open tenant case…) was printed once and lost.
``bill_run_note`` keeps one row per account, run and reason:

- ``kind = 'skipped'``: the account got no bill in this run (``code`` ``tariff``, ``meter``,
  ``tenant_case``, ``no_days``, ``overlap``);
- ``kind = 'warning'``: the account was billed (or checked, prepaid) but the data said something
  the bill had to work around (``period``: the account's period does not follow the cycle's;
  ``index_continuity``: the series now disagrees with the previous bill's end index;
  ``prescribed``: a correction older than the prescription was not rebilled; ``vend_unpriced``:
  a vend by amount on a tariff without ``prepaid_price``).

Billing writes as the editor role: INSERT only. Everyone reads it (default privileges, 0004).
No TimescaleDB-specific path: a plain table on both.
"""

from __future__ import annotations

from psycopg import Connection, sql

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE bill_run_note (
    run_id      bigint NOT NULL REFERENCES bill_run (id),
    account_id  integer NOT NULL REFERENCES account (id),
    kind        text NOT NULL CHECK (kind IN ('skipped', 'warning')),
    code        text NOT NULL,
    message     text NOT NULL,
    bill_id     bigint REFERENCES bill (id),
    PRIMARY KEY (run_id, account_id, kind, code)
);
CREATE INDEX bill_run_note_account_idx ON bill_run_note (account_id, run_id);
COMMENT ON TABLE bill_run_note IS
    'Per account and bill run: why it was skipped, or what a bill had to work around (warnings).';
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create ``bill_run_note`` and let the editor role (billing) insert into it."""
    conn.execute(DDL.encode())
    editor = sql.Identifier(ctx.roles[2])
    conn.execute(sql.SQL("GRANT INSERT ON bill_run_note TO {}").format(editor))

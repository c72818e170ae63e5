"""Dashboard users: who may log in to the fraud and billing pages, with a salted scrypt hash.

Rows are created by ``releve dashboard adduser`` (as the migration owner); the dashboards read them
as the reader role to check a login. No password is ever stored in clear, nor in code.
"""

from __future__ import annotations

from psycopg import Connection

from releve.migrate import MigrationContext

DDL = """
CREATE TABLE dashboard_user (
    username       text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash  text NOT NULL,
    roles          text[] NOT NULL CHECK (roles <@ ARRAY['fraud', 'billing', 'admin']::text[]),
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE dashboard_user IS 'Dashboard logins: scrypt hash (never the password) and roles fraud/billing/admin.';
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Create the users table (readable by every role through the default privileges of 0004)."""
    conn.execute(DDL.encode())

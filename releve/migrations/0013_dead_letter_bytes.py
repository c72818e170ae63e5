r"""Dead letters keep their payload as bytes; the collectors' spool gets a health row with an alarm.

- ``rejected_input.payload_bytes`` (bytea): the payload exactly as received, NUL bytes and binary
  included. ``payload`` (text) stays for existing readers: a rendering of the same bytes (UTF-8 as
  is, other bytes and NUL escaped as ``\xNN``, very long payloads cut with a note). Rows written
  before this migration have no ``payload_bytes``: their text payload is exact (it could not hold a
  NUL), so ``coalesce(payload_bytes, convert_to(payload, 'UTF8'))`` reads every row as bytes.
- ``link_health.alarm`` (text): why a link needs a person (NULL when all is well), and the kind
  ``spool`` for the row a collector writes about its spool and forwarder (segments landed,
  segments quarantined, whether the database takes them).

Nothing here depends on TimescaleDB: both tables are plain tables on either storage path.
"""

from __future__ import annotations

from psycopg import Connection

from releve.migrate import MigrationContext

DDL = """
ALTER TABLE rejected_input ADD COLUMN payload_bytes bytea;
COMMENT ON COLUMN rejected_input.payload_bytes IS
    'The payload exactly as received (NULL for rows written before migration 0013: then payload is exact).';
COMMENT ON COLUMN rejected_input.payload IS
    'The payload as readable text: UTF-8 as is, other bytes and NUL escaped as \\xNN, long payloads cut.';

ALTER TABLE link_health ADD COLUMN alarm text;
ALTER TABLE link_health DROP CONSTRAINT IF EXISTS link_health_kind_check;
ALTER TABLE link_health ADD CONSTRAINT link_health_kind_check CHECK (kind IN ('tcp', 'rtu', 'mqtt', 'spool'));
COMMENT ON COLUMN link_health.alarm IS
    'Why this link or spool needs a person (quarantined segments, a stalled forwarder); NULL when all is well.';
"""


def upgrade(conn: Connection, ctx: MigrationContext) -> None:
    """Add the columns (no rewrite of existing rows; the writer role's INSERT/UPDATE grants cover them)."""
    conn.execute(DDL.encode())

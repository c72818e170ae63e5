"""Lookup rows the readings refer to (channels, units, sources, read types), kept in step with the model.

Run after every migration: it inserts what the code knows and the database does not, and never
deletes, so ids stay stable.
"""

from __future__ import annotations

from psycopg import Connection

from releve.model import CHANNELS, ReadType, Source

UNITS = ("kWh", "Wh", "MWh", "kvarh", "W", "kW", "V", "A", "Hz", "m3", "L", "m3/h", "L/h", "count", "1", "s")


def sync(conn: Connection) -> None:
    """Insert missing channels, units, sources and read types."""
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO channel (code, kind, unit, interval_s, description)
               VALUES (%s, %s, %s, %s, %s) ON CONFLICT (code) DO NOTHING""",
            [(c.code, c.kind.value, c.unit, c.interval_s, c.description) for c in CHANNELS.values()],
        )
        cur.executemany("INSERT INTO unit (code) VALUES (%s) ON CONFLICT DO NOTHING", [(u,) for u in UNITS])
        cur.executemany(
            "INSERT INTO reading_source (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(i + 1, s.value) for i, s in enumerate(Source)],
        )
        cur.executemany(
            "INSERT INTO read_type (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(i + 1, r.value) for i, r in enumerate(ReadType)],
        )

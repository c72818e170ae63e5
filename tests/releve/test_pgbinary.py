"""releve.pgbinary: rows encoded for ``COPY … FROM STDIN`` come back identical from ``COPY … TO STDOUT``."""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from releve.pgbinary import (
    HEADER,
    TRAILER,
    copy_arrays,
    copy_blocks,
    copy_records,
    encode,
    new_rows,
    pg_micros,
    row_dtype,
)

DTYPE = row_dtype(("k", ">i4"), ("c", ">i2"), ("ts", ">i8"), ("v", ">f8"))


def _rows(n: int) -> np.ndarray:
    rec = new_rows(DTYPE, n)
    rec["k"] = np.arange(n)
    rec["c"] = np.arange(n) % 7
    rec["ts"] = pg_micros(np.datetime64("2026-03-29T00:45", "us") + np.arange(n) * np.timedelta64(15, "m"))
    rec["v"] = np.arange(n) * 0.25 - 3.0
    return rec


def test_new_rows_fill_the_field_count_and_lengths() -> None:
    rec = new_rows(DTYPE, 3)
    assert rec["n"].tolist() == [4, 4, 4]
    assert [rec[f"l{k}"][0] for k in range(1, 5)] == [4, 2, 8, 8]
    assert encode(rec).startswith(HEADER) and encode(rec).endswith(TRAILER)
    assert encode(rec, first=False, last=False) == rec.tobytes()


def test_round_trip_through_the_server_in_pieces(database_url: str) -> None:
    rec = _rows(10_001)
    with psycopg.connect(database_url) as conn:
        conn.execute("CREATE TEMP TABLE t (k integer, c smallint, ts timestamptz, v double precision)")
        with conn.cursor().copy("COPY t FROM STDIN (FORMAT BINARY)") as copy:
            for a in range(0, len(rec), 4_000):  # header before the first piece only, trailer after the last
                b = min(a + 4_000, len(rec))
                copy.write(encode(rec[a:b], first=a == 0, last=b == len(rec)))
        row = conn.execute("SELECT ts FROM t WHERE k = 0").fetchone()
        assert row is not None and row[0].isoformat() == "2026-03-29T00:45:00+00:00"
        back = copy_records(conn, "COPY (SELECT k, c, ts, v FROM t ORDER BY k) TO STDOUT (FORMAT BINARY)", None, DTYPE)
        assert back.tobytes() == rec.tobytes()
        blocks = list(
            copy_blocks(conn, "COPY (SELECT * FROM t ORDER BY k) TO STDOUT (FORMAT BINARY)", None, DTYPE, 3_000)
        )
        assert [len(b) for b in blocks] == [3_000, 3_000, 3_000, 1_001]
        assert b"".join(b.tobytes() for b in blocks) == rec.tobytes()


def test_arrays_come_back_one_row_per_series(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        query = """COPY (SELECT k::int, array_agg(v ORDER BY v) FILTER (WHERE v > 0) AS v,
                                coalesce(array_agg(ts ORDER BY ts) FILTER (WHERE v > 0), '{}') AS ts
                         FROM (VALUES (1, 2.5::float8, timestamptz '2000-01-01 00:00:01 UTC'), (1, 0.5, '2000-01-01 UTC'),
                                      (2, -1.0, '2000-01-02 UTC')) x(k, v, ts)
                         GROUP BY k ORDER BY k) TO STDOUT (FORMAT BINARY)"""
        with pytest.raises(ValueError, match="column 2 is NULL"):  # k = 2 has no positive v
            copy_arrays(conn, query, None, (">i4", ">f8[]", ">i8[]"))
        keys, values, stamps = copy_arrays(
            conn, query.replace("FILTER (WHERE v > 0) AS v", "AS v"), None, (">i4", ">f8[]", ">i8[]")
        )
        with pytest.raises(ValueError, match="cannot be read as >f8"):  # numeric, not float8
            copy_arrays(
                conn,
                query.replace("2.5::float8", "2.5").replace("FILTER (WHERE v > 0) AS v", "AS v"),
                None,
                (">i4", ">f8[]", ">i8[]"),
            )
        assert keys == [1, 2]
        assert [v.tolist() for v in values] == [[0.5, 2.5], [-1.0]]
        assert [t.tolist() for t in stamps] == [[0, 1_000_000], []]

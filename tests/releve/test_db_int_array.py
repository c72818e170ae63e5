"""releve.db.int_array: a list of integers passed as one array literal reads back as the same integers."""

from __future__ import annotations

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from releve.db import int_array


def test_an_array_literal_of_no_integer_is_empty_braces() -> None:
    assert int_array([]) == "{}"
    assert int_array(iter([3, -1, 0])) == "{3,-1,0}"


def test_int_array_reads_back_as_the_same_bigints_in_the_same_order(database_url: str) -> None:
    @settings(max_examples=30, deadline=None, database=None)
    @given(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50))
    def round_trip(values: list[int]) -> None:
        row = conn.execute("SELECT %s::bigint[]", (int_array(values),)).fetchone()
        assert row is not None and row[0] == values

    with psycopg.connect(database_url) as conn:
        round_trip()

"""The fraud page lists a ranking in the order ``releve theft rank`` prints it, by default (real PostgreSQL).

The run the page shows by default is the newest; the demo stores one with the command's defaults
(period, order, exclusions). The command's list, printed without storing, and the page's query of
the demo's run must name the same meters in the same order.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from releve.cli import build_parser

pytestmark = pytest.mark.db


def test_the_cli_and_the_fraud_page_rank_in_the_same_order_by_default(filled, tmp_path: Path):
    from dashboards.queries import Queries
    from demo.run import Demo, DemoOptions

    # What the command prints (and would store), with its defaults.
    out = tmp_path / "cli.csv"
    args = build_parser().parse_args(["theft", "rank", "--no-store", "--quiet", "--top", "500", "-o", str(out)])
    assert args.func(args, filled.settings) == 0
    cli = [row["meter"] for row in csv.DictReader(out.open())]
    assert len(cli) >= 10
    # What the page shows: the newest run, stored by the demo's ranking step, in the page's default sort.
    Demo(DemoOptions(), filled.settings).rank_theft(filled.url)
    q = Queries(filled.url, filled.settings)
    try:
        run = q.theft_runs()[0]
        assert run["model"] == "unsupervised"
        rows, total = q.candidates(run["id"], 0, 1000, None, None)
        page = [r["serial"] for r in rows]
        assert total == len(page)
        assert page[: len(cli)] == cli
        period = filled.one("SELECT period_to - period_from FROM theft_run WHERE id = %s", (run["id"],))
        with_default = filled.one("SELECT parameters->>'order' FROM theft_run WHERE id = %s", (run["id"],))
        assert with_default == "risk" and period >= 1
    finally:
        q.close()

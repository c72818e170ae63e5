"""A bill run per cycle when ``reading`` is sharded by meter (docs/scaling.md, sharding by meter).

Where the data lives:

- **Bills, determinants, the account ledger, bill-run notes, prepaid checks and tenant cases stay on
  the coordinator**, beside the registry (accounts, service points, installations). An account is
  one place: its balance, dunning and payments never need a cross-shard transaction, and an account
  whose meter was exchanged for one hashing to another shard is still billed in one piece.
- **The validated series is read on the shard holding each meter.** The coordinator's
  ``releve_shards`` schema (``releve.shards.attach_shards``) holds ``validated_reading`` (and its
  ``validated_between`` and ``validated_series`` over that mirror),
  ``reading_version``, ``vee_exception`` and ``reading_freeze`` as tables hash-partitioned on
  ``meter_id`` exactly as ``reading_sharded`` is, each partition a ``postgres_fdw`` foreign table on
  its shard. The bill run (:func:`billing.run.run_bills`, unchanged) runs on a coordinator session
  with that schema first in its search path: its one COPY of the series becomes one scan per shard,
  run at the same time (the shard servers are ``async_capable``, so PostgreSQL's Append starts every
  shard's scan before it waits on any), and each shard filters its own rows by period and channel.
- **The freeze of billed reads lands on the meter's shard** (``reading_freeze`` there), written in
  the bill run's transaction: postgres_fdw commits each shard's remote transaction just before the
  coordinator's (not two-phase: a coordinator failing in between leaves freezes without their bills,
  which only makes VEE there ask for an adjustment instead of an edit until the cycle is re-run). VEE on
  that shard refuses to change a billed read, as on one server.

The same cycle billed on one server and on three shards gives the same bills to the cent
(tests/analytics/test_vee_shards.py).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from billing.draft import RunSummary
from billing.run import run_bills
from billing.tariffs import TariffBook
from releve import db, shards
from releve.settings import Settings


class ShardsNotAttachedError(Exception):
    """The coordinator has no shard schema over ``database.shard_urls`` yet."""


def run_bills_sharded(
    url: str,
    settings: Settings,
    book: TariffBook,
    cycle: str,
    period_end: date,
    issue_date: date | None = None,
    out_dir: Path | None = None,
) -> RunSummary:
    """Bill ``cycle`` on the coordinator ``url`` from the series on the shards of ``database.shard_urls``."""
    n = len(settings.database.shard_urls)
    with db.connect(url) as conn:
        if not shards.ready(conn, n):
            raise ShardsNotAttachedError(
                f"the coordinator has no {shards.SHARD_SCHEMA} schema over {n} shards: attach them first "
                "(releve.shards.attach_shards(coordinator, shard_urls, settings), docs/scaling.md)"
            )
    return run_bills(shards.through_shards(url), settings, book, cycle, period_end, issue_date, out_dir)

"""The dashboards' database access: :class:`Queries`, the one object every page receives.

The queries live in one module per page, over the shared pools, fleet clock and fleet snapshot of
:mod:`dashboards.queries_base`: the control room's in :mod:`dashboards.queries_control`, the meter
page's in :mod:`dashboards.queries_meter`, the billing page's in :mod:`dashboards.queries_billing`,
the fraud unit's in :mod:`dashboards.queries_fraud` (mixins :class:`Queries` combines), the accounts
page's in :mod:`dashboards.queries_accounts` and the field-work page's in
:mod:`dashboards.queries_field` (objects over the same pools: ``Queries.accounts``, ``Queries.field``).
The names below are re-exported so ``from dashboards.queries import ...`` keeps working.
"""

from __future__ import annotations

from dashboards.queries_base import (
    FLEET_SNAPSHOT_SQL,
    FLEET_SQL,
    FLEET_SUMMARY_SQL,
    LATE_AFTER,
    LATE_POLLS,
    LOOKBACK,
    MAP_POINTS,
    SILENT_AFTER,
    SILENT_POLLING,
    STATES,
    FleetSnapshot,
    Pool,
    Row,
)
from dashboards.queries_billing import HELD_BILLS, ISSUED_BILLS, REVIEW_QUEUE, BillingQueries
from dashboards.queries_control import (
    ALARM_KINDS,
    LIVE_VALUES,
    LIVE_WITHIN,
    METER_LIST,
    REGISTRY_COLUMNS,
    REGISTRY_LIST,
    REGISTRY_SQL,
    ControlRoomQueries,
)
from dashboards.queries_fraud import CANDIDATES, FraudQueries
from dashboards.queries_meter import INDEX_HISTORY, MeterQueries

__all__ = [
    "ALARM_KINDS",
    "CANDIDATES",
    "FLEET_SNAPSHOT_SQL",
    "FLEET_SQL",
    "FLEET_SUMMARY_SQL",
    "HELD_BILLS",
    "INDEX_HISTORY",
    "ISSUED_BILLS",
    "LATE_AFTER",
    "LATE_POLLS",
    "LIVE_VALUES",
    "LIVE_WITHIN",
    "LOOKBACK",
    "MAP_POINTS",
    "METER_LIST",
    "REGISTRY_COLUMNS",
    "REGISTRY_LIST",
    "REGISTRY_SQL",
    "REVIEW_QUEUE",
    "SILENT_AFTER",
    "SILENT_POLLING",
    "STATES",
    "FleetSnapshot",
    "Pool",
    "Queries",
    "Row",
]


class Queries(ControlRoomQueries, MeterQueries, BillingQueries, FraudQueries):
    """The dashboards' access to the database: a reader pool, an editor pool, and the queries."""

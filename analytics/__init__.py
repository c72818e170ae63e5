"""Analytics: validation, estimation and editing (VEE) of the series, and theft ranking.

Reads what ingest landed; writes validated versions, exceptions and inspection lists.
May import ``releve`` (and ``ingest`` for importers); never imports billing or dashboards.
"""

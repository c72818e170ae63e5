"""Billing: determinants and bills from the validated series only.

Owns the tariff file (``tariffs``: validated TOML, exact decimals), the pure arithmetic (``pricing``:
cycle periods, boundary indexes, proration, blocks, time of use, demand, taxes), the bill run (``run``
orchestrates it; ``draft``: the data it computes; ``periods``: the cycle's accounts, their periods and
meters; ``determinants``: indexes and data-quality figures from the validated series; ``holds``: hold
rules; ``intervals``: time of use and demand; ``store``: cancel/rebill, bills, determinants, freezes;
``prepaid``: prepaid checks), water tenant changes (``tenant``), the CIS feed and vending import
(``feed``) and ``releve bill …`` (``cli``).
See docs/billing.md.

May import ``releve`` and ``analytics``; never imports collectors or dashboards.
"""

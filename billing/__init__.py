"""Billing: determinants and bills from the validated series only.

May import ``releve`` and ``analytics``; never imports collectors or dashboards.
"""

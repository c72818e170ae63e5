"""Dashboards: the Dash web app for the control room, the fraud unit and billing.

Reads through the same query layer as the rest of Relevé. May import every other package; nothing
imports it.
"""

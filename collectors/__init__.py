"""Collectors: poll meters over Modbus TCP and RTU, subscribe to MQTT, and never lose a reading.

Owns device polling, payload decoding, the store-and-forward spool and collection health.
May import ``releve`` and ``ingest``; never imports analytics, billing or dashboards.
"""

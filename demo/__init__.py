"""The demo: the composition root that wires every stage of Relevé into one running whole.

Owns ``releve demo`` (``cli``) and its wiring (``run``): an embedded PostgreSQL and MQTT broker, a
simulated fleet, its history through the ingest write path, VEE, the theft ranking, bill runs,
credit control and work orders, the fleet served live to a collector, and the dashboards.

May import every package (``releve``, ``simulators``, ``collectors``, ``ingest``, ``analytics``,
``billing``, ``dashboards``); no package imports it. The demo's state file, which every other
``releve`` command reads, belongs to the core (:mod:`releve.demostate`).
"""

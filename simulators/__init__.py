"""Simulators: realistic meters and gateways (Modbus TCP/RTU, MQTT) with injected faults and theft.

Owns the simulated fleet and its ground truth. May import ``releve`` only: it is the start of the
data flow.

Modules: consumption shapes (``consumption``); the fleet, topology and block engine with the
ground-truth labels (``engine``); one table entry per theft, fault or context kind: its parameters,
events and transforms (``injections``); the fleet file (``config``); the simulated clock (``clock``);
the protocol front-ends, Modbus TCP/RTU (``modbus``) and MQTT (``mqtt``); the CSV backfill
(``backfill``); ``releve simulate`` (``cli``). Register maps come from the shared device profiles in
:mod:`releve.profiles`. See docs/simulators.md.
"""

"""Simulators: realistic meters and gateways (Modbus TCP/RTU, MQTT) with injected faults and theft.

Owns the simulated fleet and its ground truth. May import ``releve`` only: it is the start of the
data flow.
"""

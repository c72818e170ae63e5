"""The credit-control loop end to end, on real servers, once per command transport.

An unpaid bill from a real bill run walks reminder → final notice → disconnection order; the order's
relay command is executed by a real collector against the simulated meter (pymodbus over TCP, or the
JSON command topic through Mosquitto) and confirmed by reading the relay back; the index landed in
PostgreSQL stops; a payment closes the case at the next run, which orders the reconnection; its command
is confirmed and the index rises again. Credit control runs "on a day": the days are given.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from billing import credit, ledger, workorders
from collectors.config import CollectorConfig
from collectors.service import Collector
from releve import db as releve_db
from releve import meter_commands as mc
from simulators.clock import SimClock
from simulators.config import parse_fleet
from simulators.engine import Simulation
from simulators.modbus import BackgroundModbus
from simulators.mqtt import MqttPublisher

from .fleet import Fleet, ts

pytestmark = pytest.mark.db

D = Decimal
CFG = credit.load_config(credit.EXAMPLE)
SPEED = 3600.0  # one simulated hour per second: the index visibly rises between polls
INDEX = "1-0:1.8.0"
FINAL = ("confirmed", "failed", "expired")


def simulation(**mqtt) -> Simulation:
    return Simulation(
        parse_fleet(
            {
                "seed": 5,
                "horizon_days": 90,
                "start": "2026-03-01T00:00:00Z",
                "topology": {
                    "transformers": 1,
                    "customers_per_transformer": 4,
                    "dmas": 0,
                    "electricity_models": {"sdm630": 1.0},
                },
                "modbus": {"tcp_base_port": 0, "rtu_lines": 0, "devices_per_gateway": 8},
                "mqtt": {"electricity_share": 0.0, **mqtt},
                "theft": {"rate": 0.0},
                "faults": {"rate": 0.0},
            },
            "credit loop fleet",
        )
    )


def editor(db):
    return releve_db.connect(db.url, role=releve_db.editor_role(db.settings), autocommit=True)


def run(db, on: date):
    with editor(db) as conn, conn.transaction():
        return credit.run_credit(conn, CFG, on)


def customer_with_a_smart_meter(db, sim: Simulation, meter, protocol: str) -> int:
    """Registry rows for the simulated meter: service point, installation, account on tariff E, cycle A."""
    f = Fleet(db)
    sp = f.point("SP-smart", "electricity")
    f.sql(
        "INSERT INTO meter (serial, commodity, model, unit, protocol) VALUES (%s, 'electricity', %s, 'kWh', %s)",
        (meter.serial, meter.model, protocol),
    )
    f.install(meter.serial, sp)
    acc = f.account("A-smart", sp, "E")
    f.sql("UPDATE customer SET phone = '+22900000001'")
    # The March reads are the simulated meter's own index (a meter reader's, or last month's polls).
    f.reads(
        meter.serial,
        [(t, round(sim.values_at(meter.index, t)[INDEX], 3)) for t in (ts(3, 2), ts(4, 1))],
        commodity="electricity",
    )
    return acc


def index_rows(db, serial: str, channel: str = INDEX) -> list[tuple[datetime, float]]:
    with db.connect() as conn:
        return conn.execute(
            "SELECT r.ts, r.value FROM reading_all r JOIN meter m ON m.id = r.meter_id JOIN channel c ON c.id = r.channel_id "
            "WHERE m.serial = %s AND c.code = %s AND r.ts > %s ORDER BY r.ts",
            (serial, channel, ts(4, 2)),
        ).fetchall()


def wait_rows(db, serial: str, more: int, timeout: float = 30.0) -> None:
    """Until ``more`` further index reads of the meter have landed."""
    target = len(index_rows(db, serial)) + more
    deadline = time.monotonic() + timeout
    while len(index_rows(db, serial)) < target and time.monotonic() < deadline:
        time.sleep(0.2)


def wait_command(db, command_id: int, timeout: float = 30.0) -> mc.MeterCommand:
    deadline = time.monotonic() + timeout
    with db.connect() as conn:
        while True:
            cmd = mc.command_status(conn, command_id)
            if cmd.state in FINAL or time.monotonic() > deadline:
                return cmd
            time.sleep(0.1)


def trail(db, command_id: int) -> list[tuple[str, str]]:
    with db.connect() as conn:
        return [(e.state, e.actor) for e in mc.command_events(conn, command_id)]


def collector_config(tmp_path, name: str, **parts) -> CollectorConfig:
    return CollectorConfig.model_validate(
        {
            "name": name,
            "spool_dir": str(tmp_path / "spool"),
            "seal_seconds": 0.2,
            "commands": {"check_every_s": 0.3, "retry_base_s": 0.5, "retry_max_s": 1.0, "mqtt_ack_timeout_s": 5.0},
            **parts,
        }
    )


@dataclass
class Walked:
    """What the walk left behind, for the transport's own index checks."""

    off: mc.MeterCommand
    on: mc.MeterCommand


def walk(db, acc: int, serial: str, collector: str) -> Walked:
    """The unpaid bill's whole walk, with a collector executing the commands; asserts each state."""
    f = Fleet(db)
    total = f.one("SELECT total FROM bill WHERE status = 'issued'")
    with editor(db) as conn:
        (entry,) = [
            e for e in ledger.statement(conn, acc, date(2026, 4, 1), date(2026, 4, 30)).lines if e.kind == "bill"
        ]
        assert entry.amount == total > 0
        assert ledger.balance(conn, acc, date(2026, 4, 12)).overdue == 0  # due on 12 April

    assert sum(run(db, date(2026, 4, 12)).actions.values()) == 0
    assert dict(run(db, date(2026, 4, 13)).actions) == {"reminder": 1}
    assert sum(run(db, date(2026, 4, 20)).actions.values()) == 0  # the final notice comes at 15 days
    assert dict(run(db, date(2026, 4, 27)).actions) == {"final_notice": 1}
    with editor(db) as conn:
        (case,) = credit.list_cases(conn)
        assert case[0] == "A-smart" and case[3:5] == (2, False)

    wait_rows(db, serial, 3)  # the collector polls the meter: it is consuming
    s = run(db, date(2026, 5, 12))
    assert dict(s.actions) == {"disconnect": 1}
    (order,) = s.work_orders
    with editor(db) as conn:
        o = workorders.list_orders(conn, kind="disconnect")[0]
        assert (o.id, o.status, o.account, o.meter) == (order, "awaiting_command", "A-smart", serial)
        assert ledger.balance(conn, acc, date(2026, 5, 12)).balance == total + D("7.00")  # notice and cut charges
    off = wait_command(db, o.command_id)
    assert (off.kind, off.state, off.work_order_id) == ("disconnect", "confirmed", order), off
    with editor(db) as conn, conn.transaction():
        assert workorders.sync_commands(conn) == (1, 0)  # the order follows its command
        o = workorders.list_orders(conn, kind="disconnect")[0]
        assert (o.status, o.outcome) == ("done", "confirmed")
        assert [e[1] for e in workorders.events(conn, order)] == ["created", "command_queued", "command_confirmed"]
        assert mc.relay_state(conn, serial) == "disconnected"
        assert credit.list_cases(conn)[0][3:5] == (3, True)

    wait_rows(db, serial, 4)  # polls land while the relay is open
    with editor(db) as conn, conn.transaction():
        owed = ledger.balance(conn, acc, date(2026, 5, 13)).balance
        ledger.pay(conn, "A-smart", owed, "BANK-2026-0513-1", date(2026, 5, 13), "bank")
    s = run(db, date(2026, 5, 13))
    assert dict(s.actions) == {"reconnect": 1}
    (back,) = s.work_orders
    with editor(db) as conn:
        assert credit.list_cases(conn) == []
        pos = ledger.balance(conn, acc, date(2026, 5, 13))
        assert pos.balance == CFG.steps_for("residential").reconnection_charge and pos.overdue == 0
        r = workorders.list_orders(conn, kind="reconnect")[0]
        assert (r.id, r.status) == (back, "awaiting_command")
    on = wait_command(db, r.command_id)
    assert (on.kind, on.state, on.work_order_id) == ("reconnect", "confirmed", back), on
    run(db, date(2026, 5, 14))  # every credit run syncs the orders with their commands
    with editor(db) as conn:
        r = workorders.list_orders(conn, kind="reconnect")[0]
        assert (r.status, r.outcome) == ("done", "confirmed")
        assert mc.relay_state(conn, serial) == "connected"
    wait_rows(db, serial, 3)  # consuming again

    editor_role = releve_db.editor_role(db.settings)
    for cmd in (off, on):
        assert trail(db, cmd.id) == [("queued", editor_role), ("sent", collector), ("confirmed", collector)]
        assert cmd.reason is not None and cmd.reason.startswith(f"work order {cmd.work_order_id}: ")
    steps = f.sql("SELECT step, action FROM credit_action ORDER BY id")
    assert steps == [
        ("reminder", "notice"),
        ("final_notice", "notice"),
        ("disconnect", "disconnect"),
        ("reconnect", "reconnect"),
    ]
    assert f.one("SELECT count(*) FROM credit_run") == 7
    return Walked(off, on)


def assert_stopped_then_resumed(before: list[float], while_open: list[float], after: list[float]) -> None:
    assert len(before) >= 2 and len(while_open) >= 3 and len(after) >= 2
    assert before[-1] > before[0]  # consuming
    assert max(while_open) - min(while_open) < 1e-3  # the index stopped (rounded in MQTT payloads)
    assert after[-1] > after[0] >= while_open[0] - 1e-3  # resumed from where it stopped


def test_an_unpaid_bill_ends_in_a_modbus_disconnection_that_stops_the_index_and_payment_reconnects(db, tmp_path):
    sim = simulation()
    clock = SimClock(datetime(2026, 5, 11, 17, tzinfo=UTC), speed=SPEED)
    with BackgroundModbus(sim, clock) as front:
        gw = front.gateways[0]
        unit, index = next((u, m) for u, m in sorted(gw.store.units.items()) if sim.meters[m].role == "customer")
        meter = sim.meters[index]
        acc = customer_with_a_smart_meter(db, sim, meter, "modbus-tcp")
        Fleet(db).run()  # the bill run issues the March bill and posts it to the ledger, due 12 April
        cfg = collector_config(
            tmp_path,
            "loop-tcp",
            modbus={
                "periods": {"energy": 0.5, "instant": 0.5, "events": 5.0},
                "jitter": 0.0,
                "retries": 0,
                "backoff_base_s": 0.5,
                "backoff_max_s": 1.0,
                "gateways": [
                    {
                        "name": "gw0",
                        "host": gw.host,
                        "port": gw.port,
                        "timeout_s": 1.0,
                        "meters": [{"serial": meter.serial, "unit": unit, "profile": "sdm630"}],
                    }
                ],
            },
        )
        with running(Collector(cfg, db.settings, db.url)):
            w = walk(db, acc, meter.serial, "loop-tcp")
        assert sim.relay_closed(index, clock.now())
    assert w.off.answer["read_back"] == {"function": 4, "address": 505, "value": 0.0}
    assert w.on.answer["read_back"]["value"] == 1.0
    rows = index_rows(db, meter.serial)  # Modbus polls are stamped with the collector's clock
    assert_stopped_then_resumed(
        [v for t, v in rows if t < w.off.sent_at],
        [v for t, v in rows if w.off.confirmed_at <= t < w.on.sent_at],
        [v for t, v in rows if t >= w.on.confirmed_at],
    )


@pytest.mark.mqtt
def test_an_unpaid_bill_ends_in_a_disconnection_through_an_mqtt_command_topic_and_payment_reconnects(
    db, mqtt_broker, tmp_path
):
    sim = simulation(electricity_share=1.0, styles=["json"], publish_every_s=0.3, url=mqtt_broker.url)
    clock = SimClock(datetime(2026, 5, 11, 17, tzinfo=UTC), speed=SPEED)
    meter = next(m for m in sim.meters if m.transport == "mqtt" and m.role == "customer")
    acc = customer_with_a_smart_meter(db, sim, meter, "mqtt")
    Fleet(db).run()
    settings = db.settings.model_copy(update={"mqtt": db.settings.mqtt.model_copy(update={"url": mqtt_broker.url})})
    cfg = collector_config(
        tmp_path,
        "loop-mqtt",
        mqtt={"client_id": "loop-c1", "subscriptions": [{"topic": "releve/{serial}/reading", "decoder": "json"}]},
    )
    collector = Collector(cfg, settings, db.url)
    with publishing(sim, clock, mqtt_broker.url), running(collector):
        assert collector.commands.mqtt.connected.wait(10)
        w = walk(db, acc, meter.serial, "loop-mqtt")
    assert w.off.answer["relay"] == "open" and w.on.answer["relay"] == "closed"
    ((opened, closed),) = sim.controls.relay_periods(meter.index)
    rows = index_rows(db, meter.serial)  # stamped with the meter's (simulated) clock
    assert_stopped_then_resumed(
        [v for t, v in rows if t < opened],
        [v for t, v in rows if opened <= t < closed],
        [v for t, v in rows if t >= closed],
    )


@contextmanager
def running(collector: Collector) -> Iterator[Collector]:
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


@contextmanager
def publishing(sim: Simulation, clock: SimClock, url: str) -> Iterator[None]:
    """The simulator's MQTT meters publish every 0.3 s (and obey their command topic) until the block ends."""
    publisher = MqttPublisher(sim, clock, url, client_id="sim-loop")
    publisher.connect()
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            publisher.publish(publisher.messages(clock.now()))
            stop.wait(0.3)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        publisher.close()

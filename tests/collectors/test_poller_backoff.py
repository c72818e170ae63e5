"""A dead meter backs off as one meter, whatever the number of its poll classes (real TCP gateway)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from collectors.modbus import MeterTarget, Poller, PollSettings, TcpGateway
from releve.profiles import load_profile
from simulators.clock import SimClock
from simulators.config import parse_fleet
from simulators.engine import Simulation
from simulators.modbus import BackgroundModbus


def test_a_dead_meter_backs_off_five_ten_twenty_across_all_its_poll_classes(caplog):
    sim = Simulation(
        parse_fleet(
            {
                "seed": 3,
                "topology": {"transformers": 1, "customers_per_transformer": 2, "dmas": 0},
                "modbus": {"tcp_base_port": 0, "rtu_lines": 0},
                "mqtt": {"electricity_share": 0.0},
                "theft": {"rate": 0.0},
                "faults": {"rate": 0.0},
            },
            "backoff fleet",
        )
    )
    clock = SimClock(datetime(2026, 1, 5, tzinfo=UTC))
    profile = load_profile("sdm630")
    classes = {e.poll_class for e in profile.registers}
    assert len(classes) == 3  # three poll classes that all fall due together
    base = 0.4  # the 5 → 10 → 20 s ladder, scaled down so the test takes seconds
    with BackgroundModbus(sim, clock) as front:
        gw = front.gateways[0]
        link = TcpGateway("gw", gw.host, gw.port, max_connections=4, timeout=1.0)
        dead = MeterTarget.build("DEAD", 200, profile, "gw")  # nobody answers at unit 200: exception 11
        settings = PollSettings(
            periods=dict.fromkeys(classes, 0.1),
            jitter=0.0,
            retries=0,
            backoff_base=base,
            backoff_max=60.0,
            align=False,
            first_poll_spread=0.05,
        )
        poller = Poller([(link, [dead])], lambda *a: None, settings)

        async def run() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(3.4, stop.set)
            await poller.run(stop)
            link.close()

        with caplog.at_level(logging.WARNING, logger="collectors.modbus"):
            asyncio.run(run())
    failures = [r for r in caplog.records if "backing off" in r.getMessage()]
    backoffs = [r.args[-1] for r in failures]  # type: ignore[index]
    # Polled every 0.1 s in three classes, the meter still failed once per backoff period:
    # 0.4, 0.8, 1.6 s (then 3.2 s), never several steps at once.
    assert backoffs[:3] == [base, 2 * base, 4 * base]
    assert backoffs == [base * 2**i for i in range(len(backoffs))] and len(backoffs) <= 4
    for before, after, waited in zip(failures, failures[1:], backoffs, strict=False):
        assert after.created - before.created >= waited - 0.05
    assert dead.health.failures == len(backoffs) and dead.health.errors == {"exception": len(backoffs)}
    assert dead.health.backoff_s == backoffs[-1]

"""A meter in CDAB word order, served by a pymodbus server of this test's own (not Relevé's simulator).

Its registers are packed here with ``struct``, independently of ``releve.profiles.encode``. Polled
with a profile that says ABCD, nothing lands as a reading and every refusal is in the database with
its reason; ``releve collect probe`` names CDAB; the profile with the right order lands the values.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collectors.config import CollectorConfig
from collectors.service import Collector
from releve.pgserver import free_port
from releve.profiles import PROFILE_DIR

pytestmark = pytest.mark.db

#: What the meter measures (channel -> SDM630 input register address, value), as on its display.
SHOWS = {
    "1-0:32.7.0": (0, 231.4),
    "1-0:52.7.0": (2, 229.8),
    "1-0:72.7.0": (4, 232.6),
    "1-0:31.7.0": (6, 12.37),
    "1-0:51.7.0": (8, 8.91),
    "1-0:71.7.0": (10, 10.42),
    "1-0:21.7.0": (12, 2710.3),
    "1-0:41.7.0": (14, 1950.6),
    "1-0:61.7.0": (16, 2290.1),
    "1-0:1.7.0": (52, 6951.0),
    "1-0:13.7.0": (62, 0.93),
    "1-0:14.7.0": (70, 50.02),
    "1-0:1.8.0": (72, 18234.56),
    "1-0:2.8.0": (74, 312.75),
    "1-0:15.8.0": (342, 18547.31),
}
UNIT, GARBAGE_UNIT = 1, 2


def cdab(value: float) -> list[int]:
    """An IEEE-754 float32 as a CDAB meter puts it on the wire: low word first."""
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return [low, high]


def input_registers(fill: int | None = None) -> list[int]:
    registers = [0] * 600  # SDM630 map, plus the status/event words at 500..504 (all zero: no event)
    for address, value in SHOWS.values():
        registers[address : address + 2] = cdab(value) if fill is None else [fill, fill]
    return registers


class OwnServer:
    """A plain pymodbus TCP server in a thread: unit 1 in CDAB order, unit 2 answering 0xFFFF words."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.server: ModbusTcpServer | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _device(self, unit: int, registers: list[int]) -> SimDevice:
        holding = [SimData(0, values=[0] * 60, datatype=DataType.REGISTERS)]  # serial number at 42..45
        inputs = [SimData(0, values=registers, datatype=DataType.REGISTERS)]
        bits = [SimData(0, values=[False], datatype=DataType.BITS)]
        return SimDevice(unit, simdata=(bits, bits, holding, inputs))

    def _run(self) -> None:
        async def serve() -> None:  # pymodbus servers belong to the running loop that creates them
            devices = [self._device(UNIT, input_registers()), self._device(GARBAGE_UNIT, input_registers(0xFFFF))]
            self.server = ModbusTcpServer(devices, address=("127.0.0.1", self.port))
            await self.server.serve_forever()

        self.loop.run_until_complete(serve())

    def __enter__(self) -> OwnServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the test's Modbus server did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        self.thread.join(10)


@pytest.fixture
def server() -> Iterator[OwnServer]:
    with OwnServer() as s:
        yield s


def cdab_profile(tmp_path: Path) -> Path:
    """The shipped SDM630 profile with every float32 in CDAB order (what the probe tells us to write)."""
    text = (PROFILE_DIR / "sdm630.toml").read_text()
    text = text.replace('order = "ABCD"\n', "").replace(
        'data_type = "float32"', 'data_type = "float32"\norder = "CDAB"'
    )
    path = tmp_path / "sdm630.toml"
    path.write_text(text)
    return path


def poll_for(db, server: OwnServer, tmp_path: Path, profile: str, seconds: float = 2.6) -> Collector:
    config = CollectorConfig.model_validate(
        {
            "name": "word-order",
            "spool_dir": str(tmp_path / f"spool-{Path(profile).stem}-{time.monotonic_ns()}"),
            "seal_seconds": 0.2,
            "modbus": {
                "periods": {"energy": 1.0, "instant": 1.0, "events": 1.0},
                "jitter": 0.0,
                "retries": 0,
                "gateways": [
                    {
                        "name": "own",
                        "host": "127.0.0.1",
                        "port": server.port,
                        "timeout_s": 1.0,
                        "meters": [{"serial": "CDAB-1", "unit": UNIT, "profile": profile}],
                    }
                ],
            },
        }
    )
    collector = Collector(config, db.settings, db.url)
    collector.start()
    time.sleep(seconds)
    collector.stop()
    return collector


def probe(server_port: int | str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "releve.cli", "collect", "probe", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )


def test_wrong_word_order_lands_nothing_probe_names_cdab_and_the_right_profile_lands_the_values(db, server, tmp_path):
    db.add_meters(["CDAB-1"])

    # 1. The shipped profile says ABCD: every value is refused, with its reason, in the database.
    wrong = poll_for(db, server, tmp_path, "sdm630")
    health = wrong.poller.meters[0].health
    assert health.good >= 3 and health.failures == 0  # the meter answered: the values are what is wrong
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM reading_all").fetchone()[0] == 0
        dead = conn.execute("SELECT source, origin, reason, payload FROM rejected_input ORDER BY id").fetchall()
    assert dead and {source for source, *_ in dead} == {"modbus"}
    assert all(origin == f"modbus own unit {UNIT} (CDAB-1)" for _, origin, _, _ in dead)
    letters = [json.loads(payload) for *_, payload in dead]
    assert {d["channel"] for d in letters} == set(SHOWS)  # every value refused, none landed
    voltage = next(
        (reason, d) for (_, _, reason, _), d in zip(dead, letters, strict=True) if d["register"] == "voltage_l1"
    )
    reason, letter = voltage
    assert reason.startswith("voltage_l1: implausible (")
    assert letter["raw"] == cdab(231.4) and letter["order"] == "ABCD" and letter["address"] == 0
    assert letter["decoded"] == pytest.approx(struct.unpack(">f", struct.pack(">HH", *cdab(231.4)))[0])
    assert {d["rule"] for d in letters} <= {"finite", "tiny", "sign", "range", "order"}
    assert "range" in {d["rule"] for d in letters} and "order" in {d["rule"] for d in letters}
    with db.connect() as conn:  # the control room sees why this meter yields nothing
        errors = conn.execute("SELECT errors FROM comm_health WHERE serial = 'CDAB-1'").fetchone()[0]
    assert errors["implausible"] == len(dead)
    config = tmp_path / "c.toml"
    config.write_text(f'name = "word-order"\nspool_dir = "{tmp_path / "status-spool"}"\n')
    env = {
        **os.environ,
        "RELEVE_DATABASE__URL": db.url,
        "RELEVE_DATABASE__ROLE_PREFIX": db.settings.database.role_prefix,
    }
    status = subprocess.run(
        [sys.executable, "-m", "releve.cli", "collect", "status", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    refused = status.stdout.split("meters whose values were refused as implausible")[1].splitlines()[1]
    assert refused.split() == ["CDAB-1", "own", str(len(dead)), "value(s)", "refused"]

    # 2. The probe names CDAB (and says what to change in the profile); exit 0.
    found = probe(server.port, f"127.0.0.1:{server.port}", "--unit", UNIT, "--model", "sdm630")
    assert found.returncode == 0, found.stderr
    assert "CDAB: all 15 values make sense in this order and in no other" in found.stdout
    assert 'set order = "CDAB"' in found.stdout
    row = next(line for line in found.stdout.splitlines() if line.startswith("voltage_l1"))
    assert "231.4 " in row  # the CDAB column shows what the display shows

    # 3. With the right order the same meter lands its values, nothing more is refused.
    right = poll_for(db, server, tmp_path, str(cdab_profile(tmp_path)))
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT c.code, r.value, u.code FROM reading_all r JOIN channel c ON c.id = r.channel_id "
            "JOIN unit u ON u.id = r.unit_id"
        ).fetchall()
        refused_after = conn.execute("SELECT count(*) FROM rejected_input").fetchone()[0]
    assert refused_after == len(dead)
    good = right.poller.meters[0].health.good_by_class
    assert len(rows) == sum(good[e.poll_class] for e in right.poller.meters[0].profile.registers if e.kind != "status")
    for code, value, _ in rows:
        assert value == pytest.approx(SHOWS[code][1], rel=1e-6), code


def test_probe_says_when_no_order_makes_sense_and_refuses_bad_arguments(server):
    garbage = probe(server.port, f"127.0.0.1:{server.port}", "--unit", GARBAGE_UNIT, "--model", "sdm630")
    assert garbage.returncode == 1
    assert "no order makes sense of any of the 15 values: wrong model, unit id or addresses?" in garbage.stdout

    closed = probe(0, f"127.0.0.1:{free_port()}", "--unit", 1, "--model", "sdm630", "--timeout", "0.5")
    assert closed.returncode == 1 and closed.stdout == ""
    assert "does not answer" in closed.stderr

    for args, message in [
        (["127.0.0.1:99999", "--unit", 1, "--model", "sdm630"], "port '99999' is not a number in 1..65535"),
        (["127.0.0.1:502", "--unit", 0, "--model", "sdm630"], "--unit 0 is outside 1..247"),
        (["127.0.0.1:502", "--unit", 1, "--model", "no-such-meter"], "no profile for model 'no-such-meter'"),
        (["127.0.0.1:502", "--unit", 1, "--model", "gen-counter16"], "no multi-register values"),
        (["127.0.0.1:x", "--unit", 1, "--model", "sdm630"], "port 'x' is not a number"),
    ]:
        bad = probe(0, *args)
        assert bad.returncode == 2 and message in bad.stderr and bad.stdout == "", (args, bad.stderr)
    usage = probe(0, "--help")
    assert usage.returncode == 0 and "HOST[:PORT]" in usage.stdout

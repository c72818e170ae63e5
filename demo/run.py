"""``releve demo``: the whole chain on the embedded defaults, in one process tree.

This module wires every package together (the demo package is the composition root: it imports
every stage, nothing imports it): an embedded PostgreSQL and MQTT broker, a simulated fleet with
theft and faults, its history backfilled and loaded through the ingest path, the live simulators
served over Modbus TCP, Modbus RTU on pseudo-terminals and MQTT, a collector polling and subscribing
to them, validation (VEE), the theft ranking, a bill run, and the dashboards. Everything lives in
one data directory (``var/demo`` by default), so a second start reuses it; ``--fresh`` starts over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from analytics.theft.store import rank_database
from analytics.vee.run import run_vee
from billing import credit, ledger, workorders
from billing.run import run_bills
from billing.tariffs import load_tariffs
from collectors.config import CollectorConfig
from collectors.service import Collector
from dashboards.app import create_app
from dashboards.auth import ROLES, add_user
from dashboards.browser import serve_in_thread
from ingest import BatchWriter, ReadingFrame
from ingest.importer import LoadSummary, load_installations, load_registry
from releve import db, demostate, migrate
from releve.broker import MqttBroker
from releve.model import Source
from releve.settings import Settings
from simulators.backfill import write_labels, write_registry
from simulators.clock import SimClock
from simulators.config import FleetConfig, parse_fleet
from simulators.engine import Simulation
from simulators.live import LiveScenarios
from simulators.modbus import ModbusFrontEnd
from simulators.mqtt import MqttPublisher

log = logging.getLogger(__name__)

VEE_EVERY_S = 300.0
WORK_SYNC_EVERY_S = 10.0


@dataclass
class DemoOptions:
    """What ``releve demo`` was asked for."""

    data_dir: Path = Path("var/demo")
    fresh: bool = False
    meters: int = 300
    days: int = 90
    port: int = 8050
    duration: float = 0.0  # seconds; 0 = until Ctrl-C
    seed: int = 2026
    faults_every: float = 120.0  # seconds between live fault scenarios; 0 = none
    faults_last: float = 600.0  # how long each lasts


def say(message: str) -> None:
    """A progress line on stderr (the demo talks to a person)."""
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@contextmanager
def step(what: str) -> Iterator[None]:
    """Announce a step and how long it took."""
    say(f"{what} …")
    t0 = time.perf_counter()
    yield
    say(f"{what}: done in {time.perf_counter() - t0:.1f} s")


def fleet_config(options: DemoOptions, start: datetime) -> FleetConfig:
    """A fleet of about ``options.meters`` meters: electricity on Modbus TCP/RTU and MQTT, water on LoRaWAN."""
    per_transformer = 25
    water_share = 0.2
    transformers = max(1, round(options.meters * (1 - water_share) / (per_transformer + 1)))
    dmas = max(1, round(options.meters * water_share / (per_transformer + 1)))
    return parse_fleet(
        {
            "seed": options.seed,
            "start": start.isoformat(),
            "horizon_days": options.days + 60,
            "speed": 1.0,
            "topology": {
                "transformers": transformers,
                "customers_per_transformer": per_transformer,
                "dmas": dmas,
                "customers_per_dma": per_transformer,
            },
            "theft": {"rate": 0.06, "min_days": 10, "max_days": 40},
            "faults": {"rate": 0.08, "min_days": 2, "max_days": 10},
            "modbus": {"tcp_base_port": 0, "rtu_lines": 2, "devices_per_line": 4, "devices_per_gateway": 64},
            "mqtt": {"electricity_share": 0.2, "publish_every_s": 15.0},
        },
        "demo fleet",
    )


def _state(options: DemoOptions) -> dict[str, Any]:
    """The demo's memory between starts: the fleet's start date and what has been done."""
    path = options.data_dir / "demo.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    state = {
        "start": (now - timedelta(days=options.days)).replace(hour=0).isoformat(),
        "seed": options.seed,
        "meters": options.meters,
        "loaded": False,
    }
    _save(options, state)
    return state


def _save(options: DemoOptions, state: dict[str, Any]) -> None:
    options.data_dir.mkdir(parents=True, exist_ok=True)
    (options.data_dir / "demo.json").write_text(json.dumps(state, indent=2))


class Demo:
    """Starts the parts in order, keeps them running, and stops them in reverse order."""

    def __init__(self, options: DemoOptions, settings: Settings) -> None:
        self.options = options
        self.settings = settings
        self._stops: list[tuple[str, Callable[[], None]]] = []
        self.where: list[str] = []
        self.database_data_dir = ""
        self.collector_config: Path | None = None
        self.dashboard = ""
        self._published = False
        self.preparing = "starting"  # what the dashboards say is still under way ("" once everything runs)

    def publish_state(self, url: str) -> None:
        """Tell the other ``releve`` commands of this folder where the demo is (releve/demostate.py)."""
        state = demostate.DemoState(
            pid=os.getpid(),
            database_url=url,
            database_data_dir=self.database_data_dir,
            mqtt_url=self.settings.mqtt.url,
            collector_config=str(self.collector_config or ""),
            dashboard=self.dashboard,
            data_dir=str(self.options.data_dir.resolve()),
        )
        path = demostate.write(state)
        if not self._published:
            self._published = True
            self._on_stop("state file", demostate.mark_stopped)
            self.where.append(f"state file  {path} (every releve command here uses this demo's database)")

    def _on_stop(self, name: str, func: Callable[[], None]) -> None:
        self._stops.append((name, func))

    def stop(self) -> None:
        """Stop everything started so far, newest first; keep the data."""
        while self._stops:
            name, func = self._stops.pop()
            try:
                func()
            except Exception as exc:  # keep stopping the rest
                say(f"stopping {name}: {exc}")

    # -- the parts ------------------------------------------------------------------------------------
    def start_database(self) -> str:
        if not self.settings.database.url:
            self.settings.database.data_dir = self.options.data_dir / "pg"
            server = db.embedded_server(self.settings)
            self._on_stop("database", server.stop)
        url = db.database_url(self.settings)
        self.database_data_dir = "" if self.settings.database.url else str(db.embedded_server(self.settings).data_dir)
        migrate.upgrade(url, self.settings)
        self.where.append(f"database    {url}")
        return url

    def start_broker(self) -> str:
        if self.settings.mqtt.url:
            self.where.append(f"mqtt broker {self.settings.mqtt.url} (external)")
            return self.settings.mqtt.url
        broker_dir = self.options.data_dir / "mqtt"
        broker_dir.mkdir(parents=True, exist_ok=True)
        broker = MqttBroker(broker_dir)
        broker.start()
        self._on_stop("mqtt broker", broker.stop)
        self.settings.mqtt.url = broker.url
        self.where.append(f"mqtt broker {broker.url} ({broker.kind})")
        return broker.url

    def load_history(self, url: str, sim: Simulation, state: dict[str, Any], until: datetime) -> None:
        """Backfill the fleet's history straight into the write path (no CSV round trip)."""
        if state.get("loaded"):
            say("history already loaded (use --fresh to start over)")
            return
        days = (until - sim.start).total_seconds() / 86400
        registry = self.options.data_dir / "registry"
        registry.mkdir(parents=True, exist_ok=True)
        summary = LoadSummary()
        with step(f"simulating and loading {days:.0f} days of history for {len(sim.meters)} meters"):
            write_registry(sim, registry)
            exchanges = [lb for lb in sim.labels(until=until) if lb.kind == "meter_exchange"]
            write_labels(exchanges, registry / "labels.csv")  # work orders only; other labels are truth
            with psycopg.connect(url) as conn:
                load_registry(conn, registry, summary)
                conn.commit()
            with BatchWriter(url, self.settings, origin="demo backfill") as writer:
                for number, frame in history_frames(sim, days):
                    key = uuid.uuid5(uuid.NAMESPACE_URL, f"releve-demo:{state['start']}:{state['seed']}:{number}")
                    summary.readings += writer.write(frame, batch_key=key).inserted
                events = sim.meter_events(days)
                summary.events = writer.write([], list(events)).events
            with psycopg.connect(url) as conn:
                load_installations(conn, registry, summary)
                conn.commit()
            db.refresh_daily(url)
            say(
                f"  {summary.readings:,} readings, {summary.events} events, {summary.meters} meters, "
                f"{summary.accounts} accounts, {summary.exchanges} meter exchanges"
            )
        state["loaded"] = True
        _save(self.options, state)

    def validate(self, url: str) -> None:
        """Run VEE over everything landed since the last run."""
        summary = run_vee(url, self.settings, who="demo")
        exceptions = sum(summary.exceptions.values())
        say(f"  VEE: {summary.reads:,} reads validated, {exceptions:,} exceptions, {summary.estimates:,} estimates")

    def rank_theft(self, url: str) -> None:
        """Rank theft suspects over the history and store the run (tonight's inspection list)."""
        with db.connect(url) as conn:
            today = conn.execute(
                "SELECT max(id) FROM theft_run WHERE source = 'demo' AND created_at >= date_trunc('day', now())"
            ).fetchone()
        if today and today[0]:
            say(f"  theft: today's ranking is kept (run {today[0]}); it ranks days, a restart changes none")
            return
        # The defaults of `releve theft rank` (period, order, exclusions): the fraud page shows this run,
        # and it must list the meters in the order the command prints them.
        result = rank_database(self.settings, url, origin="demo")
        top = result.candidates[0] if result.candidates else None
        say(
            f"  theft: run {result.run_id}, {len(result.candidates)} candidates"
            + (f"; first: meter {top.meter} — {top.reasons[0]}" if top and top.reasons else "")
        )

    def bill(self, url: str) -> None:
        """Bill every cycle for the 30 days ending yesterday (billing/tariffs.example.toml)."""
        book = load_tariffs(Path(str(files("billing") / "tariffs.example.toml")))
        with db.connect(url) as conn:
            cycles = [c for (c,) in conn.execute("SELECT DISTINCT billing_cycle FROM account ORDER BY 1")]
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        out = self.options.data_dir / "billing"
        out.mkdir(parents=True, exist_ok=True)
        with db.connect(url) as conn:
            done = {
                c
                for (c,) in conn.execute(
                    "SELECT DISTINCT cycle FROM bill_run WHERE period_end = %s AND finished_at IS NOT NULL",
                    (yesterday,),
                )
            }
        if done:
            say(f"  bills: cycle(s) {', '.join(sorted(done))} already billed up to {yesterday}; not run again")
        for cycle in (c for c in cycles if c not in done):
            summary = run_bills(url, self.settings, book, cycle, yesterday, out_dir=out)
            say(
                f"  bills, cycle {cycle}: {summary.issued} issued, {summary.held} held, "
                f"{summary.unchanged} unchanged, {summary.prepaid} prepaid checked"
            )

    def credit_control(self, url: str, state: dict[str, Any]) -> None:
        """Credit control over the demo's accounts: arrears, a bank payment file, weekly runs up to today.

        The fleet's bills are all fresh (due in ``due_days``), so the demo brings a few accounts' arrears
        forward from "the previous billing system" once (an ``adjustment`` due weeks ago; the first start's
        day is kept in the state file), imports a bank file paying some of them, and catches up the weekly
        credit-control runs of the last three weeks, then runs today's: reminders, final notices and a
        few disconnections whose relay commands the demo's collector executes. A run already made for a
        day is kept (a restart adds nothing).
        """
        today = datetime.now(UTC).date()
        anchor = date.fromisoformat(state.setdefault("credit_from", today.isoformat()))
        cfg = credit.load_config(credit.EXAMPLE)
        out = self.options.data_dir / "credit"
        with db.connect(url, role=db.editor_role(self.settings), autocommit=True) as conn:
            with conn.transaction():  # every bill run's bills on the ledger (runs post their own; idempotent)
                for (run_id,) in conn.execute("SELECT id FROM bill_run WHERE finished_at IS NOT NULL").fetchall():
                    ledger.post_bills(conn, int(run_id))
            if not state.get("arrears"):
                with conn.transaction():
                    arrears, paying = demo_arrears(conn, anchor, self.options.seed)
                path = out / f"payments-{anchor - timedelta(days=10)}.csv"
                out.mkdir(parents=True, exist_ok=True)
                path.write_text(
                    "reference,account,amount,paid_at,source\n"
                    + "".join(
                        f"DEMO-{anchor:%Y%m%d}-{i},{number},{amount},{anchor - timedelta(days=10)},bank\n"
                        for i, (number, amount) in enumerate(paying, start=1)
                    )
                )
                paid = ledger.import_payments(conn, path)
                say(
                    f"  arrears brought forward on {arrears} account(s); bank file {path.name}: "
                    f"{paid.added} payment(s), {paid.total}"
                )
                state["arrears"] = True
                _save(self.options, state)
            days = sorted({anchor - timedelta(days=d) for d in (21, 14, 7, 0)} | {today})
            done = {
                d for (d,) in conn.execute("SELECT DISTINCT run_date FROM credit_run WHERE run_date = ANY(%s)", (days,))
            }
            for day in days:
                if day in done:
                    continue
                with conn.transaction():
                    s = credit.run_credit(conn, cfg, day, out, now=datetime.now(UTC) if day == today else None)
                acts = ", ".join(f"{k} {v}" for k, v in sorted(s.actions.items())) or "no step"
                say(f"  credit control on {day}: {s.accounts} account(s) in arrears, {acts}")
            if done >= set(days):
                say(f"  credit control: the runs up to {today} are kept (one run a day)")

    def work_orders(self, url: str) -> None:
        """Inspection orders for tonight's theft list (route order) and meter checks / exchanges from VEE."""
        with db.connect(url, role=db.editor_role(self.settings), autocommit=True) as conn, conn.transaction():
            row = conn.execute("SELECT max(id) FROM theft_run WHERE source = 'demo'").fetchone()
            theft = workorders.from_theft(conn, int(row[0]), top=10) if row and row[0] else []
            vee = workorders.from_vee(conn)
        say(
            f"  work orders: {len(theft)} inspection(s) from the theft list, {len(vee)} meter check(s) / "
            "exchange(s) from VEE (existing ones kept)"
        )

    def follow_commands(self, url: str) -> None:
        """Complete the work orders whose meter command the collector confirmed (``releve work sync``)."""
        try:
            with db.connect(url, role=db.editor_role(self.settings), autocommit=True) as conn, conn.transaction():
                done, reopened = workorders.sync_commands(conn)
        except Exception as exc:  # the next round tries again; the demo goes on
            say(f"work orders not synced with their commands: {exc}")
            return
        if done or reopened:
            say(f"work orders: {done} done by their confirmed meter command, {reopened} back to a crew")

    def describe_credit(self, url: str) -> None:
        """The "where" line of credit control and field work."""
        with db.connect(url) as conn:
            row = conn.execute(
                """SELECT count(*) FILTER (WHERE step = 'reminder'), count(*) FILTER (WHERE step = 'final_notice'),
                          count(*) FILTER (WHERE action = 'disconnect'),
                          (SELECT count(*) FROM work_order WHERE status IN ('open', 'assigned', 'awaiting_command'))
                   FROM credit_action"""
            ).fetchone()
        assert row is not None
        self.where.append(
            f"credit      {row[0]} reminders, {row[1]} final notices, {row[2]} disconnections "
            f"(releve credit list); {row[3]} open work orders (releve work list)"
        )

    def start_dashboards(self, url: str) -> str:
        """Serve the dashboards; create the demo login, every role (a random password kept in a 0600 file)."""
        login = self.options.data_dir / "demo-login.txt"
        if login.is_file():
            password = login.read_text().split()[1]
        else:
            password = secrets.token_urlsafe(12)
            fd = os.open(login, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"demo {password}\n")
        with db.connect(url, autocommit=True) as conn:
            add_user(conn, "demo", password, list(ROLES), replace=True)
        app = create_app(url, self.settings, preparing=lambda: self.preparing)
        stack = ExitStack()
        base = stack.enter_context(serve_in_thread(app.server, "127.0.0.1", self.options.port))
        self._on_stop("dashboards", stack.close)
        self.dashboard = base
        self.where.append(f"dashboards  {base}/  (login: demo / {password}, kept in {login})")
        return base

    def start_simulators(self, sim: Simulation, publish: bool = True) -> ModbusFrontEnd:
        """Serve the fleet's Modbus meters (TCP gateways, RTU lines on ptys) on their own event loop."""
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # silent units are part of the show
        self._clock = SimClock(datetime.now(UTC), speed=1.0)
        loop = asyncio.new_event_loop()
        self._loop = loop
        front = ModbusFrontEnd(sim, self._clock, run_dir=self.options.data_dir / "run")
        thread = threading.Thread(target=loop.run_forever, name="demo-simulators", daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(front.start(), loop).result(30)

        def halt() -> None:
            asyncio.run_coroutine_threadsafe(front.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

        self._on_stop("simulators", halt)
        self.where += [f"simulator   {line}" for line in front.describe()]
        if publish:
            self.start_publisher(sim)
        return front

    def start_live_faults(self, sim: Simulation, front: ModbusFrontEnd) -> None:
        """Inject faults while the demo runs (simulators/live.py), so the control room has something to act on."""
        if not self.options.faults_every:
            return
        loop = self._loop
        scenarios = LiveScenarios(
            sim,
            front,
            every_s=self.options.faults_every,
            lasts_s=self.options.faults_last,
            seed=self.options.seed,
            say=say,
        )
        self._scenarios = scenarios

        def halt() -> None:
            asyncio.run_coroutine_threadsafe(scenarios.end_all(), loop).result(30)

        self._on_stop("live faults", halt)
        self.where.append(
            f"live faults one every {self.options.faults_every:.0f} s, each for "
            f"{self.options.faults_last:.0f} s (gateway down, silent line, tamper, sag)"
        )

    def tick_live_faults(self) -> None:
        """Let the live scenarios start and end faults (called from the demo's main loop)."""
        scenarios = getattr(self, "_scenarios", None)
        if scenarios is None:
            return
        future = asyncio.run_coroutine_threadsafe(scenarios.tick(time.monotonic(), datetime.now(UTC)), self._loop)
        try:
            future.result(30)
        except Exception as exc:  # a fault that could not be injected must not stop the demo
            say(f"live fault not injected: {exc}")

    def start_publisher(self, sim: Simulation) -> None:
        """Publish the fleet's MQTT meters (plain JSON, Tasmota SML, LoRaWAN uplinks) to the broker."""
        loop = self._loop
        stop = asyncio.Event()
        publisher = MqttPublisher(sim, self._clock, self.settings.mqtt.url, client_id="releve-demo-simulator")
        asyncio.run_coroutine_threadsafe(asyncio.to_thread(publisher.connect), loop).result(30)
        task = asyncio.run_coroutine_threadsafe(publisher.run(stop), loop)

        def halt() -> None:
            loop.call_soon_threadsafe(stop.set)
            task.result(30)
            publisher.close()

        self._on_stop("mqtt publisher", halt)
        self.where.append(f"simulator   mqtt publisher -> {self.settings.mqtt.url}: {len(publisher.meters)} meters")

    def start_collector(self, url: str, sim: Simulation, front: ModbusFrontEnd) -> Collector:
        def meters(units: dict[int, int]) -> list[dict[str, Any]]:
            return [
                {"serial": sim.meters[m].serial, "unit": u, "profile": sim.meters[m].model}
                for u, m in sorted(units.items())
            ]

        config = CollectorConfig.model_validate(
            {
                "name": "demo-collector",
                "spool_dir": str(self.options.data_dir / "spool"),
                "mqtt": {
                    "client_id": "releve-demo-collector",
                    "subscriptions": [
                        {"topic": "releve/{serial}/reading", "decoder": "json"},
                        {"topic": "releve/{serial}/event", "decoder": "json"},
                        {
                            "topic": "tele/sml-{serial}/SENSOR",
                            "decoder": "tasmota",
                            "options": {"timezone": "UTC"},
                        },  # the simulator stamps Tasmota time in UTC
                        {
                            "topic": "v3/{app}/devices/water-{serial}/up",
                            "decoder": "ttn",
                            "options": {"device_prefix": "water-"},
                        },
                    ],
                },
                "modbus": {
                    "periods": {"energy": 900, "instant": 60, "events": 60},
                    "gateways": [
                        {
                            "name": f"gw{i}",
                            "host": gw.host,
                            "port": gw.port,
                            "max_connections": 4,
                            "meters": meters(gw.store.units),
                        }
                        for i, gw in enumerate(front.gateways)
                    ],
                    "lines": [
                        {
                            "name": f"line{ln.number}",
                            "port": ln.path,
                            "baudrate": ln.baudrate,
                            "meters": meters(ln.store.units),
                        }
                        for ln in front.lines
                    ],
                },
            }
        )
        # The demo announces each fault it injects; the collector's warning per meter and retry would flood the
        # console (64 lines a round for a gateway down). `releve collect status` and the control room show them.
        logging.getLogger("collectors.modbus").setLevel(logging.ERROR)
        self.collector_config = (self.options.data_dir / "collector.json").resolve()
        self.collector_config.write_text(json.dumps(config.model_dump(mode="json"), indent=2))
        collector = Collector(config, self.settings, url)
        collector.start()

        def halt() -> None:
            collector.stop()
            say(f"collector: {collector.forwarder.landed_rows:,} live readings landed this session")

        self._on_stop("collector", halt)
        self.where.append(f"collector   spool {config.spool_dir}")
        return collector


def history_frames(sim: Simulation, days: float) -> Iterator[tuple[int, ReadingFrame]]:
    """The fleet's register reads and interval values, one ReadingFrame per simulated week."""
    serials = [m.serial for m in sim.meters]
    end_step = int(days * sim.steps_per_day)
    for blk in sim.blocks(days):
        count = min(blk.steps, end_step - blk.first_step)
        if count <= 0:
            break
        ok = blk.available[:, :count]
        meter_idx = np.broadcast_to(np.arange(len(serials), dtype=np.int32)[:, None], ok.shape)[ok]
        starts = blk.times[:count].astype("datetime64[us]")
        width = np.timedelta64(sim.config.interval_minutes, "m")
        parts = []
        for kind, values in (("import", blk.reported_imp), ("export", blk.reported_exp), ("interval", blk.rec)):
            # Register reads at the interval's start; interval values at its end (the industry's convention).
            stamps = starts + width if kind == "interval" else starts
            ts = np.broadcast_to(stamps[None, :], ok.shape)[ok]
            channels = [getattr(m, f"{kind}_channel") for m in sim.meters]
            names = sorted(set(channels))
            per_meter = np.array([names.index(c) for c in channels], np.int32)
            units = ["kWh", "m3"]
            unit_of = np.array([units.index(m.unit) for m in sim.meters], np.int32)
            parts.append(
                ReadingFrame(
                    serials,
                    meter_idx,
                    names,
                    per_meter[meter_idx],
                    ts,
                    np.round(values[:, :count][ok], 4),
                    units,
                    unit_of[meter_idx],
                    Source.IMPORT,
                )
            )
        yield blk.number, ReadingFrame.concat(parts)


def demo_arrears(conn: psycopg.Connection[Any], anchor: date, seed: int) -> tuple[int, list[tuple[str, Decimal]]]:
    """Bring arrears forward on about one postpaid account in eight; return (how many, who pays and how much).

    Three ages, so that the weekly runs 21, 14 and 7 days before ``anchor`` and on it reach each step
    (billing/credit.example.toml): three debts due 35 days before it (reminder, final notice, then the
    disconnection on the day, on meters the collector can switch), some due 20 days before (reminder,
    then the final notice on the day) and the rest 5 days before (a reminder on the day). One account
    of each of the two older groups pays in full ten days before ``anchor``: its case closes.
    """
    rng = random.Random(seed)
    accounts = conn.execute(
        """SELECT a.id, a.number, m.protocol FROM account a
           JOIN installation i ON i.service_point_id = a.service_point_id AND i.removed_at IS NULL
           JOIN meter m ON m.id = i.meter_id
           WHERE NOT a.prepaid AND a.closed_on IS NULL ORDER BY a.number"""
    ).fetchall()
    chosen = rng.sample(accounts, max(6, len(accounts) // 8)) if len(accounts) >= 6 else list(accounts)
    # the oldest debts on meters a collector can switch, Modbus TCP first (the steadiest link)
    chosen.sort(key=lambda a: ({"modbus-tcp": 0, "modbus-rtu": 1, "mqtt": 2}.get(a[2], 3), a[1]))
    paying = []
    middle = 3 + max(2, (len(chosen) - 3) // 2)
    for n, (acc, number, _) in enumerate(chosen):
        age = 35 if n < 3 else 20 if n < middle else 5
        amount = Decimal(rng.randint(2500, 9000)) / 100
        ledger.post(
            conn,
            acc,
            "adjustment",
            amount,
            anchor - timedelta(days=age + 30),
            due=anchor - timedelta(days=age),
            reference="balance brought forward",
            source_key=f"demo:arrears:{number}",
            note="arrears from the previous billing system",
        )
        if n in (2, 3):
            paying.append((number, amount))
    return len(chosen), paying


def run_demo(options: DemoOptions, settings: Settings) -> int:
    """Bring everything up, print what is where, run until Ctrl-C (or ``duration``), stop cleanly."""
    if options.fresh and options.data_dir.exists():
        say(f"--fresh: removing {options.data_dir}")
        shutil.rmtree(options.data_dir)
    options.data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    demo = Demo(options, settings)
    t0 = time.perf_counter()
    try:
        with step("starting the database"):
            url = demo.start_database()
        demo.publish_state(url)  # from here on, `releve db status` & co. in this folder use this database
        with step("starting the MQTT broker"):
            demo.start_broker()
        with step("starting the dashboards"):  # serving at once; pages say what is still being prepared
            base = demo.start_dashboards(url)
        say(f"dashboards answer at {base}/ while the rest is prepared")
        state = _state(options)
        sim = Simulation(fleet_config(options, datetime.fromisoformat(state["start"])))
        now = datetime.now(UTC)
        demo.preparing = f"loading {options.days} days of history"
        demo.load_history(url, sim, state, now.replace(minute=(now.minute // 15) * 15, second=0, microsecond=0))
        demo.preparing = "validating the readings (VEE)"
        with step("validating (VEE)"):
            demo.validate(url)
        demo.preparing = "ranking theft suspects"
        with step("ranking theft suspects"):
            demo.rank_theft(url)
        demo.preparing = "billing"
        with step("billing"):
            demo.bill(url)
        demo.preparing = "credit control and work orders"
        with step("credit control and work orders"):
            demo.credit_control(url, state)
            demo.work_orders(url)
            demo.describe_credit(url)
        demo.preparing = "starting the simulated meters and the collector"
        with step("starting the simulated meters (Modbus TCP, RTU on ptys, MQTT) and the collector"):
            front = demo.start_simulators(sim, publish=False)
            demo.start_collector(url, sim, front)  # subscribed before the first MQTT round
            demo.start_publisher(sim)
            demo.start_live_faults(sim, front)
        demo.preparing = ""
        demo.publish_state(url)
        say(f"up in {time.perf_counter() - t0:.0f} s")
        print(
            "\n".join(["", "Relevé demo", *demo.where, "", "Ctrl-C stops (data is kept; --fresh starts over)"]),
            flush=True,
        )
        deadline = time.monotonic() + options.duration if options.duration else None
        next_vee = time.monotonic() + VEE_EVERY_S
        next_fault = time.monotonic()
        next_sync = time.monotonic() + WORK_SYNC_EVERY_S
        while not stop.is_set():
            if deadline and time.monotonic() >= deadline:
                break
            if time.monotonic() >= next_fault:
                demo.tick_live_faults()
                next_fault = time.monotonic() + 5.0
            if time.monotonic() >= next_sync:  # disconnect / reconnect orders follow their meter commands
                demo.follow_commands(url)
                next_sync = time.monotonic() + WORK_SYNC_EVERY_S
            if time.monotonic() >= next_vee:  # validate and aggregate what the collector landed meanwhile
                demo.validate(url)
                db.refresh_daily(url)
                next_vee = time.monotonic() + VEE_EVERY_S
            stop.wait(0.5)
    finally:
        say("stopping …")
        demo.stop()
        say("stopped")
    return 0

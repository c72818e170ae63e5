"""Which byte/word order does a meter use? Read its known registers once, decode them every way.

``releve collect probe HOST[:PORT] --unit N --model M`` (or a serial port instead of a host) reads
the multi-register values of the profile ``M`` (merged reads, as the poller does), decodes each in
ABCD, CDAB, BADC and DCBA, and judges every decoded value with the profile's limits
(:mod:`collectors.plausibility`: finite, tiny, sign, range). The order under which every value
makes sense is the device's; a wrong order turns floats into 1e23 or 1e-41.

Integer registers rarely tell orders apart by range alone (a uint32 in Wh fits its limits in any
order), so a device with integer registers only may come out ambiguous: read one value off the
meter's display and compare it with the table.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from collectors.modbus import Link, ReadError, RtuLine, TcpGateway
from collectors.plan import plan_reads
from collectors.plausibility import Implausible, range_problem, raw_problem, register_limits
from releve.model import convert
from releve.profiles import ORDERS_WIDE, DeviceProfile, RegisterEntry, decode


@dataclass
class ProbeRow:
    """One register: its raw words and what each order makes of them."""

    entry: RegisterEntry
    raw: list[int] | None
    error: str | None = None
    values: dict[str, float] = field(default_factory=dict)
    problems: dict[str, Implausible | None] = field(default_factory=dict)


@dataclass
class ProbeResult:
    """Every row, the plausible count per order, and the verdict."""

    profile: DeviceProfile
    rows: list[ProbeRow]
    scores: dict[str, int]
    read: int
    order: str | None
    mixed: dict[str, str] | None
    message: str

    @property
    def found(self) -> bool:
        """Whether the probe named the device's order (one for all registers, or one per register)."""
        return self.order is not None or self.mixed is not None


def judge(entry: RegisterEntry, profile: DeviceProfile, raw: list[int], order: str) -> tuple[float, Implausible | None]:
    """What ``raw`` decodes to in ``order`` and whether the device could report that."""
    as_order = entry.model_copy(update={"order": order})
    value = decode(as_order, raw)
    problem = raw_problem(entry, value)
    if problem is None:
        stored = convert(value, entry.unit, entry.channel_unit) if entry.unit else value
        problem = range_problem(stored, register_limits(profile, entry), entry.channel_unit)
    return value, problem


def probe_registers(profile: DeviceProfile, raw: dict[RegisterEntry, list[int] | str]) -> ProbeResult:
    """Score each order over the registers read (``raw``: words, or why they could not be read)."""
    rows: list[ProbeRow] = []
    for entry, words in raw.items():
        if isinstance(words, str):
            rows.append(ProbeRow(entry, None, words))
            continue
        row = ProbeRow(entry, words)
        for order in ORDERS_WIDE:
            row.values[order], row.problems[order] = judge(entry, profile, words, order)
        rows.append(row)
    good = [r for r in rows if r.raw is not None]
    scores = {o: sum(1 for r in good if r.problems[o] is None) for o in ORDERS_WIDE}
    read = len(good)

    def verdict(message: str, order: str | None = None, mixed: dict[str, str] | None = None) -> ProbeResult:
        return ProbeResult(profile, rows, scores, read, order, mixed, message)

    if not good:
        return verdict("no register could be read: nothing to judge")
    fitting = [o for o in ORDERS_WIDE if scores[o] == read]
    undecided = [r.entry.name for r in good if all(p is None for p in r.problems.values())]
    if len(fitting) == 1:
        message = f"{fitting[0]}: all {read} values make sense in this order and in no other"
        if undecided:
            message += (
                f"; {', '.join(undecided)} make sense in every order: compare them with the meter's display "
                "(the other registers decided)"
            )
        return verdict(message, order=fitting[0])
    if len(fitting) > 1:
        return verdict(
            f"ambiguous: every value makes sense in {', '.join(fitting)}; compare a value with the "
            "meter's display (integer registers cannot tell orders apart by range)"
        )
    per_register = {r.entry.name: [o for o in ORDERS_WIDE if r.problems[o] is None] for r in good}
    if all(len(orders) == 1 for orders in per_register.values()):
        mixed = {name: orders[0] for name, orders in per_register.items()}
        return verdict(
            "mixed orders: each register makes sense in exactly one order: "
            + ", ".join(f"{n} {o}" for n, o in mixed.items()),
            mixed=mixed,
        )
    best = max(scores.values())
    if best == 0:
        return verdict(f"no order makes sense of any of the {read} values: wrong model, unit id or addresses?")
    leaders = ", ".join(o for o in ORDERS_WIDE if scores[o] == best)
    return verdict(
        f"no order makes sense of every value (best: {leaders} with {best} of {read}); "
        "wrong model, unit id or addresses?"
    )


async def read_known_registers(link: Link, unit: int, profile: DeviceProfile) -> dict[RegisterEntry, list[int] | str]:
    """The words of every multi-register value of ``profile``, or why a block could not be read."""
    wide = [e for e in profile.registers if e.count > 1 and e.kind != "status"]
    out: dict[RegisterEntry, list[int] | str] = {}
    try:
        for block in plan_reads(wide):
            try:
                registers = await link.read(unit, block)
            except ReadError as exc:
                if exc.kind in ("connection", "timeout") and not out:
                    raise
                for entry in block.entries:
                    out[entry] = str(exc)
                continue
            for entry in block.entries:
                out[entry] = block.slice(registers, entry)
    finally:
        link.close()
    return sorted_by_address(out)


def sorted_by_address(raw: dict[RegisterEntry, list[int] | str]) -> dict[RegisterEntry, list[int] | str]:
    """``raw`` in register-map order (function, address)."""
    return dict(sorted(raw.items(), key=lambda kv: (kv[0].function, kv[0].address)))


def make_link(target: str, timeout: float, baudrate: int, parity: str, stopbits: int) -> Link:
    """A TCP link for ``HOST[:PORT]`` (default port 502, ``[v6]:port`` accepted), an RTU line for a path."""
    if target.startswith("/") or target.upper().startswith("COM"):
        return RtuLine("probe", target, baudrate, parity, stopbits, timeout)
    host, port = target, 502
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), target)
    elif target.count(":") == 1:
        host, _, text = target.partition(":")
        port = _port(text, target)
    if not host:
        raise ValueError(f"{target!r}: no host")
    return TcpGateway("probe", host, port, max_connections=1, timeout=timeout)


def _port(text: str, target: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{target!r}: port {text!r} is not a number in 1..65535")
    return int(text)


def probe(link: Link, unit: int, profile: DeviceProfile) -> ProbeResult:
    """Read ``profile``'s known registers from ``unit`` on ``link`` and judge every order."""
    return probe_registers(profile, asyncio.run(read_known_registers(link, unit, profile)))


def render(result: ProbeResult) -> str:
    """The table and the verdict, as ``collect probe`` prints them."""
    lines = [
        f"{'register':<16}{'FC':>3}{'addr':>6}  {'type':<8}{'unit':<6}{'profile':<8}"
        + "".join(f"{o:>15}" for o in ORDERS_WIDE)
    ]
    for row in result.rows:
        e = row.entry
        head = f"{e.name:<16}{e.function:>3}{e.address:>6}  {e.data_type.value:<8}{e.unit:<6}{e.order:<8}"
        if row.raw is None:
            lines.append(f"{head}  not read: {row.error}")
            continue
        cells = []
        for order in ORDERS_WIDE:
            mark = " " if row.problems[order] is None else "!"
            cells.append(f"{row.values[order]:>14.6g}{mark}")
        lines.append(head + "".join(cells))
    lines.append(f"{'plausible':<47}" + "".join(f"{f'{result.scores[o]}/{result.read}':>15}" for o in ORDERS_WIDE))
    lines.append("(! marks a value the device cannot report: not finite, a tiny float, or outside its limits)")
    lines.append("")
    lines.append(result.message)
    declared = {row.entry.order for row in result.rows}
    if result.order is not None and declared != {result.order}:
        lines.append(
            f"the profile {result.profile.model} says {', '.join(sorted(declared))}: "
            f'set order = "{result.order}" on its multi-register values'
        )
    return "\n".join(lines)

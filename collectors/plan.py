"""Read planning: a meter's register map → as few Modbus requests as possible.

Entries of one function code are sorted by address and merged into one request while the request
stays within ``max_count`` registers (125, the protocol's limit for reads) and the unwanted
registers between two entries ("filler") stay within ``max_filler``. A profile's registers for one
poll class typically become one or two requests instead of one request per value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from releve.profiles import RegisterEntry

MAX_READ = 125


@dataclass(frozen=True)
class ReadBlock:
    """One request: ``count`` registers from ``address`` with function ``function``, and what is in it."""

    function: int
    address: int
    count: int
    entries: tuple[RegisterEntry, ...]

    def slice(self, registers: list[int], entry: RegisterEntry) -> list[int]:
        """The registers of ``entry`` within this block's response."""
        start = entry.address - self.address
        return registers[start : start + entry.count]


def plan_reads(entries: Iterable[RegisterEntry], max_count: int = MAX_READ, max_filler: int = 16) -> list[ReadBlock]:
    """Merge ``entries`` into read blocks (see the module docstring)."""
    if not 1 <= max_count <= MAX_READ:
        raise ValueError(f"max_count must be 1..{MAX_READ}")
    blocks: list[ReadBlock] = []
    by_function: dict[int, list[RegisterEntry]] = {}
    for entry in entries:
        by_function.setdefault(entry.function, []).append(entry)
    for function in sorted(by_function):
        current: list[RegisterEntry] = []
        start = end = 0
        for entry in sorted(by_function[function], key=lambda e: e.address):
            entry_end = entry.address + entry.count
            if current and entry.address - end <= max_filler and max(end, entry_end) - start <= max_count:
                current.append(entry)
                end = max(end, entry_end)
                continue
            if current:
                blocks.append(ReadBlock(function, start, end - start, tuple(current)))
            current, start, end = [entry], entry.address, entry_end
        if current:
            blocks.append(ReadBlock(function, start, end - start, tuple(current)))
    return blocks

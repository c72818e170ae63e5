"""The package import direction of docs/architecture.md, checked on the source.

The table in docs/architecture.md is the source: its first column names a package (``releve/``) or a
module (``releve/demo.py``) in backticks, its "may import" column lists in backticks the packages it
may import, or says ``everything``. A module follows the most specific row that contains it. Every
``import`` statement counts — at module level, inside a function, under ``TYPE_CHECKING`` — because
each one is a dependency a reader has to follow. A package may always import itself, the standard
library and third-party code; only the project's own packages are checked. (The CLI finds the
packages' subcommands by module name, ``releve.cli.COMMAND_MODULES``, which is not an import.)

A second check refuses import cycles between modules of the project: a module that imports one that
imports it back (directly or round a longer loop).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
#: The packages the table must cover: a row deleted from the doc does not switch its check off.
PACKAGES = ("releve", "simulators", "collectors", "ingest", "analytics", "billing", "dashboards", "demo")
#: The composition root: it may import everything, and nothing may import it (not even an "everything" row).
ROOT_PACKAGE = "demo"
EVERYTHING = "everything"
#: Cycles left for later, each with the issue that removes it (a fixed one must leave this list).
KNOWN_CYCLES: dict[frozenset[str], str] = {}

Rules = Mapping[str, frozenset[str] | None]  # row name ('releve', 'releve.demo') → may import (None: everything)


def read_table(markdown: str) -> dict[str, frozenset[str] | None]:
    """The rows of the first table whose header has a "may import" column."""
    lines = markdown.splitlines()
    header = next((i for i, line in enumerate(lines) if "may import" in _cells(line)), None)
    if header is None:
        raise ValueError("no table with a 'may import' column")
    column = _cells(lines[header]).index("may import")
    rules: dict[str, frozenset[str] | None] = {}
    for line in lines[header + 2 :]:  # past the header and the |---| line
        cells = _cells(line)
        if not cells:
            break
        name = re.match(r"`([\w/.]+)`", cells[0])
        if name is None:
            raise ValueError(f"row without a `package/` in its first cell: {line}")
        may = cells[column]
        allowed = None if EVERYTHING in may.split() else frozenset(n.strip("/") for n in re.findall(r"`([\w/]+)`", may))
        rules[_module_name(name.group(1))] = allowed
    return rules


def _cells(line: str) -> list[str]:
    line = line.strip()
    if not line.startswith("|"):
        return []
    return [cell.strip() for cell in line.strip("|").split("|")]


def _module_name(path: str) -> str:
    """'releve/' → 'releve'; 'releve/demo.py' → 'releve.demo'."""
    return path.strip("/").removesuffix(".py").replace("/", ".")


def modules(root: Path, packages: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """(dotted name, file) of every module of ``packages`` under ``root``."""
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) of every import statement in the file, wherever it stands."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            yield node.lineno, base
            for alias in node.names:  # `from pkg import module` imports pkg.module
                yield node.lineno, f"{base}.{alias.name}"


def rule_for(module: str, rules: Rules) -> str | None:
    """The most specific row that contains ``module`` (None: not in the table)."""
    best = None
    for row in rules:
        if (module == row or module.startswith(row + ".")) and (best is None or len(row) > len(best)):
            best = row
    return best


def violations(root: Path, rules: Rules) -> list[str]:
    """Every import of a project package that its row does not allow, as 'file:line: …'."""
    packages = tuple(sorted({row.split(".")[0] for row in rules}))
    found = []
    for name, path in modules(root, packages):
        row = rule_for(name, rules)
        assert row is not None
        own, allowed = name.split(".")[0], rules[row]
        seen = set()
        for line, target in imports(name, path):
            top = target.split(".")[0]
            if top not in packages or top == own or (line, top) in seen:
                continue
            if (allowed is None or top in allowed) and top != ROOT_PACKAGE:
                continue
            seen.add((line, top))
            may = (
                "anything but the composition root"
                if allowed is None
                else ", ".join(f"`{p}`" for p in sorted(allowed)) or "no other package"
            )
            found.append(
                f"{path.relative_to(root)}:{line}: imports `{target}` — `{row}` may import {may} (docs/architecture.md)"
            )
    return found


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Module → the project's modules it imports (a package's ``__init__`` counts as the package)."""
    files = dict(modules(root, packages))
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for _, target in imports(name, path):
            while target and target not in files:  # `from pkg.mod import function` → pkg.mod
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(frozenset(group))
    return found


def test_the_architecture_table_covers_every_package():
    rules = read_table(ARCHITECTURE.read_text(encoding="utf-8"))
    assert set(PACKAGES) <= set(rules), f"docs/architecture.md has no row for {set(PACKAGES) - set(rules)}"
    for row, allowed in rules.items():
        assert allowed is None or allowed <= set(PACKAGES), f"{row} may import an unknown package: {allowed}"


def test_no_package_imports_one_the_architecture_forbids():
    rules = read_table(ARCHITECTURE.read_text(encoding="utf-8"))
    found = violations(ROOT, rules)
    assert not found, "imports against docs/architecture.md:\n" + "\n".join(found)


def test_no_modules_import_each_other_in_a_cycle():
    graph = import_graph(ROOT, PACKAGES)
    found = set(cycles(graph))
    new = [" ↔ ".join(sorted(group)) for group in found - set(KNOWN_CYCLES)]
    assert not new, "modules that import each other:\n" + "\n".join(new)
    gone = [" ↔ ".join(sorted(group)) for group in set(KNOWN_CYCLES) - found]
    assert not gone, "cycles fixed; remove them from KNOWN_CYCLES:\n" + "\n".join(gone)


# The checks themselves, on small trees: they fail when they should.

TABLE = """
| package | job | may import |
|---|---|---|
| `releve/` | the core | nothing above it |
| `releve/demo.py` | the composition root | everything |
| `ingest/` | the writer | `releve` |
| `dashboards/` | the pages | everything |
"""


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_table_is_read_from_the_markdown():
    assert read_table(TABLE) == {
        "releve": frozenset(),
        "releve.demo": None,
        "ingest": frozenset({"releve"}),
        "dashboards": None,
    }


def test_an_upstream_import_inside_a_function_is_reported_with_file_and_line(tmp_path):
    root = _tree(
        tmp_path,
        {
            "releve/__init__.py": "",
            "ingest/__init__.py": "",
            "ingest/writer.py": "import json\n\nfrom releve import db\n\n\ndef page():\n    import dashboards.app\n",
            "dashboards/__init__.py": "import ingest\nimport releve\n",
        },
    )
    assert violations(root, read_table(TABLE)) == [
        "ingest/writer.py:7: imports `dashboards.app` — `ingest` may import `releve` (docs/architecture.md)"
    ]


def test_the_real_table_refuses_dashboards_inside_ingest(tmp_path):
    rules = read_table(ARCHITECTURE.read_text(encoding="utf-8"))
    root = _tree(tmp_path, {f"{p}/__init__.py": "" for p in PACKAGES})
    assert violations(root, rules) == []
    (root / "ingest" / "writer.py").write_text("from dashboards.app import create_app\n", encoding="utf-8")
    (root / "analytics" / "fleet.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from simulators.engine import Simulation\n",
        encoding="utf-8",
    )
    found = violations(root, rules)
    assert [line.split(" — ")[0] for line in found] == [
        "analytics/fleet.py:4: imports `simulators.engine`",
        "ingest/writer.py:1: imports `dashboards.app`",
    ]


def test_the_demo_row_lets_the_demo_import_every_stage_but_not_the_rest_of_the_core(tmp_path):
    root = _tree(
        tmp_path,
        {
            "releve/__init__.py": "",
            "releve/demo.py": "def run():\n    import dashboards\n    import ingest\n",
            "releve/db.py": "import ingest\n",
            "ingest/__init__.py": "",
            "dashboards/__init__.py": "",
        },
    )
    assert [line.split(" — ")[0] for line in violations(root, read_table(TABLE))] == [
        "releve/db.py:1: imports `ingest`"
    ]


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    root = _tree(
        tmp_path,
        {
            "dashboards/__init__.py": "",
            "dashboards/app.py": "from dashboards.pages import fraud\n",
            "dashboards/pages/__init__.py": "",
            "dashboards/pages/fraud.py": "def layout():\n    from dashboards.app import require\n",
            "dashboards/auth.py": "import dashboards.app\n",
        },
    )
    assert cycles(import_graph(root, ("dashboards",))) == [frozenset({"dashboards.app", "dashboards.pages.fraud"})]

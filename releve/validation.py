"""Reading and validating configuration-like files: one way to say what is wrong and where.

Settings, device profiles, fleet files and collector configurations are all TOML validated by
pydantic models. These two helpers give every one of them the same messages: ``<file>: cannot
read: …``, ``<file>: not valid TOML: …`` and ``<file>: <field.path>: <problem>; …``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def describe(exc: ValidationError, whole: str = "(file)") -> str:
    """``field.path: problem; …`` for every error (``whole`` names an error about the whole document)."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors())


def read_toml(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The parsed file, or ``error`` naming the file and what is wrong with it."""
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise error(f"{path}: no such file") from exc
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc

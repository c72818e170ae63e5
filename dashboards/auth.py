"""Logins for the protected pages: scrypt password hashes, roles, and the Flask session secret.

Roles: ``fraud`` (the fraud unit page), ``billing`` (the billing page and the VEE review queue),
``admin`` (every page). Users live in the ``dashboard_user`` table (migration 0010), created with
``releve dashboard adduser``; the password is read from a prompt or stdin, never from the command
line or the code. The session secret comes from ``RELEVE_DASHBOARD_SECRET``, else from the file
named by ``RELEVE_DASHBOARD_SECRET_FILE`` (default ``dashboard.secret`` beside the embedded
database's data directory), generated on first start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from psycopg import Connection

from releve.settings import Settings

ROLES = ("fraud", "billing", "admin")
#: Which role opens which protected page (admin opens all of them).
PAGE_ROLES = {"/fraud": "fraud", "/billing": "billing"}

_N, _R, _P = 2**14, 8, 1


class AuthError(ValueError):
    """A user cannot be created or changed (bad name, bad role, weak password)."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` for ``password`` (a fresh random salt unless one is given)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the stored hash (constant-time comparison)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(digest) // 2)  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def add_user(conn: Connection, username: str, password: str, roles: list[str]) -> None:
    """Create the user, or replace its password and roles."""
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise AuthError(f"roles must be among {', '.join(ROLES)} (got {', '.join(roles) or 'none'})")
    if len(password) < 8:
        raise AuthError("the password must have at least 8 characters")
    conn.execute(
        """INSERT INTO dashboard_user (username, password_hash, roles) VALUES (%s, %s, %s)
           ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, roles = excluded.roles,
                                                disabled = false, updated_at = now()""",
        (username, hash_password(password), roles),
    )


def check_login(conn: Connection, username: str, password: str) -> list[str] | None:
    """The user's roles when the password is right and the user enabled, else None."""
    row = conn.execute(
        "SELECT password_hash, roles FROM dashboard_user WHERE username = %s AND NOT disabled", (username,)
    ).fetchone()
    if row is None:
        verify_password(password, hash_password("timing-equaliser"))  # same cost for unknown users
        return None
    return list(row[1]) if verify_password(password, row[0]) else None


def allowed(roles: list[str] | None, page: str) -> bool:
    """Whether a session with ``roles`` may open ``page`` (unprotected pages: always)."""
    need = PAGE_ROLES.get(page)
    if need is None:
        return True
    return bool(roles) and (need in (roles or []) or "admin" in (roles or []))


def secret_key(settings: Settings) -> str:
    """The Flask session secret: from the environment, else a file generated on first start."""
    env = os.environ.get("RELEVE_DASHBOARD_SECRET")
    if env:
        return env
    path = Path(os.environ.get("RELEVE_DASHBOARD_SECRET_FILE") or Path(settings.database.data_dir).parent
                / "dashboard.secret")  # fmt: skip
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key

"""Logins: Argon2id password hashes, roles and the pages they open, and the Flask session secret.

Roles (a user may hold several):

- ``operator``: the control room (``/``) and the meter pages (``/meter/<serial>``);
- ``fraud``: the fraud unit (``/fraud``);
- ``billing``: billing and the VEE review queue (``/billing``), the bill pages (``/bill/<id>``),
  the accounts: arrears, the credit-control queue and each account's ledger (``/accounts``,
  ``/accounts/<number>``);
- ``field``: field work (``/field``): open work orders, service-level breaches, the map of open
  orders — for whoever dispatches crews (migration 0022);
- ``admin``: the users page (``/users``). Admin opens no customer data by itself: a person who
  also works the control room holds ``operator`` too.

Users live in the ``dashboard_user`` table (migrations 0010, 0018), created with ``releve
dashboard adduser``; the password is read from a prompt or stdin, never from the command line or
the code. Hashes are Argon2id (argon2-cffi, RFC 9106 low-memory parameters); scrypt hashes from
before 0018 are still verified, and replaced the next time the password is set. The session secret
comes from ``RELEVE_DASHBOARD_SECRET``, else from the file named by
``RELEVE_DASHBOARD_SECRET_FILE`` (default ``dashboard.secret`` beside the embedded database's data
directory), generated with mode 0600 on first start.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import flask
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import Connection

from releve.settings import Settings

ROLES = ("operator", "fraud", "billing", "field", "admin")
#: Pages in the order of the top bar: (path, role that opens it, label).
PAGES = (
    ("/", "operator", "Control room"),
    ("/meter", "operator", "Meter"),
    ("/fraud", "fraud", "Fraud unit"),
    ("/billing", "billing", "Billing"),
    ("/accounts", "billing", "Accounts"),
    ("/field", "field", "Field work"),
    ("/users", "admin", "Users"),
)
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 10

_HASHER = PasswordHasher()  # Argon2id, t=3, m=64 MiB, p=4 (RFC 9106's second recommendation)
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))  # verified for unknown users: the same cost either way


class AuthError(ValueError):
    """A user cannot be created or changed (bad name, bad role, weak password, no such user)."""


@dataclass(frozen=True)
class UserState:
    """What a session is checked against on each request: roles now, and the password's stamp."""

    roles: tuple[str, ...]
    stamp: str


def page_role(path: str) -> str | None:
    """The role that opens ``path`` (None: no such page)."""
    page = path.rstrip("/") or "/"
    if page == "/meter" or page.startswith("/meter/"):
        return "operator"
    if page.startswith(("/bill/", "/accounts/")):  # a bill page and its PDF, an account's ledger
        return "billing"
    if page.startswith("/fraud/"):  # a meter's theft evidence
        return "fraud"
    return next((role for p, role, _ in PAGES if p == page), None)


def allowed(roles: list[str] | tuple[str, ...] | None, path: str) -> bool:
    """Whether a session with ``roles`` may open ``path``."""
    role = page_role(path)
    return role is not None and role in (roles or ())


def current_user() -> tuple[str | None, list[str]]:
    """The logged-in user and roles of this request (checked by the app's guard before any Dash code)."""
    user = flask.g.get("user")
    return user, list(flask.g.get("roles") or [])


def require(page: str) -> str:
    """The user name when the session may use ``page``; raise PreventUpdate otherwise.

    Every page callback calls it first: the guard already refused a callback of a page the roles do
    not open, and this is the second check, inside the callback itself.
    """
    from dash.exceptions import PreventUpdate

    user, roles = current_user()
    if user is None or not allowed(roles, page):
        raise PreventUpdate
    return user


def pages_for(roles: list[str] | tuple[str, ...] | None) -> list[tuple[str, str]]:
    """(path, label) of every page ``roles`` open, in top-bar order."""
    return [(p, label) for p, role, label in PAGES if role in (roles or ())]


# -------------------------------------------------------------------------------------------- hashing
def hash_password(password: str) -> str:
    """An Argon2id hash of ``password`` (fresh random salt; the parameters are in the string)."""
    return _HASHER.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (Argon2id, or a legacy ``scrypt$`` hash)."""
    if stored.startswith("scrypt$"):
        return _verify_scrypt(password, stored)
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _verify_scrypt(password: str, stored: str) -> bool:
    """The hashes of migration 0010: ``scrypt$n$r$p$salt$hash``."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(digest) // 2,
            maxmem=2**26,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def stamp(password_hash: str) -> str:
    """A short fingerprint of the stored hash: a session carries it, so a new password ends old sessions."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


# -------------------------------------------------------------------------------------------- users
def _check(username: str, password: str | None, roles: list[str] | None) -> None:
    if not USERNAME.match(username):
        raise AuthError("user names are 1 to 64 letters, digits and . _ @ -")
    if roles is not None:
        bad = [r for r in roles if r not in ROLES]
        if bad or not roles:
            raise AuthError(f"roles must be among {', '.join(ROLES)} (got {', '.join(roles) or 'none'})")
    if password is not None:
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"the password must have at least {MIN_PASSWORD} characters")
        if password.casefold() == username.casefold():
            raise AuthError("the password must not be the user name")


def add_user(conn: Connection, username: str, password: str, roles: list[str], replace: bool = False) -> None:
    """Create the user (with ``replace``, or reset an existing one's password and roles)."""
    _check(username, password, roles)
    conflict = (
        (
            "DO UPDATE SET password_hash = excluded.password_hash, roles = excluded.roles, disabled = false, "
            "updated_at = now()"
        )
        if replace
        else "DO NOTHING"
    )
    cur = conn.execute(
        f"INSERT INTO dashboard_user (username, password_hash, roles) VALUES (%s, %s, %s) "
        f"ON CONFLICT (username) {conflict}",
        (username, hash_password(password), sorted(set(roles))),
    )
    if cur.rowcount == 0:
        raise AuthError(f"user {username} exists already (releve dashboard passwd changes a password)")


def set_password(conn: Connection, username: str, password: str, roles: list[str] | None = None) -> None:
    """A new password (and, when given, new roles) for an existing user; its sessions end."""
    _check(username, password, roles)
    cur = conn.execute(
        "UPDATE dashboard_user SET password_hash = %s, roles = coalesce(%s, roles), updated_at = now() "
        "WHERE username = %s",
        (hash_password(password), sorted(set(roles)) if roles else None, username),
    )
    if cur.rowcount == 0:
        raise AuthError(f"no user {username}")


def delete_user(conn: Connection, username: str) -> None:
    """Remove a user; its open sessions end at their next request."""
    if conn.execute("DELETE FROM dashboard_user WHERE username = %s", (username,)).rowcount == 0:
        raise AuthError(f"no user {username}")


def check_login(conn: Connection, username: str, password: str) -> UserState | None:
    """The user's roles and stamp when the password is right and the user enabled, else None."""
    row = conn.execute(
        "SELECT password_hash, roles FROM dashboard_user WHERE username = %s AND NOT disabled", (username,)
    ).fetchone()
    if row is None:
        verify_password(password, _DUMMY)  # the same cost as a known user: no user enumeration by timing
        return None
    return UserState(tuple(row[1]), stamp(row[0])) if verify_password(password, row[0]) else None


def user_state(conn: Connection, username: str) -> UserState | None:
    """The user's current roles and stamp (None when deleted or disabled)."""
    row = conn.execute(
        "SELECT password_hash, roles FROM dashboard_user WHERE username = %s AND NOT disabled", (username,)
    ).fetchone()
    return UserState(tuple(row[1]), stamp(row[0])) if row else None


def secret_key(settings: Settings) -> str:
    """The Flask session secret: from the environment, else a file generated on first start."""
    env = os.environ.get("RELEVE_DASHBOARD_SECRET")
    if env:
        return env
    path = Path(
        os.environ.get("RELEVE_DASHBOARD_SECRET_FILE") or Path(settings.database.data_dir).parent / "dashboard.secret"
    )
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key

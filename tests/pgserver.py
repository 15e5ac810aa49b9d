"""A PostgreSQL server for the tests that run against both databases, and a fresh database per test.

The server is ``$MINIGATE_TEST_POSTGRES_URL`` (a superuser URL such as ``postgresql://postgres@127.0.0.1:55432/
postgres``; ``.ci/run`` starts one and sets it) or, when that is not set, a throwaway cluster this module starts
from Debian's PostgreSQL binaries (``apt-get install postgresql``) on a free port of 127.0.0.1 and removes at the
end. With neither, the PostgreSQL half of the tests fails with a message saying so; it never skips.

Also a command, used by ``.ci/run`` before the venv exists (so it needs nothing but the standard library)::

    python3 tests/pgserver.py start DIR PORT   # a new cluster in DIR (any old one there is stopped and removed)
    python3 tests/pgserver.py stop DIR
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["ENV", "PostgresServer", "find_bin_dir", "postgres_server"]

ENV = "MINIGATE_TEST_POSTGRES_URL"

# Settings for a throwaway test cluster: loopback only, no Unix socket, and no fsync (a crash of the machine
# loses nothing the tests care about).
_SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off"
    " -c full_page_writes=off -c max_connections=200"
)


def find_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian keeps them in /usr/lib/postgresql/VERSION/bin."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).resolve().parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_server_user() -> tuple[list[str], int | None, int | None]:
    """Command prefix, uid and gid to run the server with: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root but there is no 'postgres' user to run PostgreSQL as") from exc
    return ["runuser", "-u", "postgres", "--"], user.pw_uid, user.pw_gid


class PostgresServer:
    """A PostgreSQL cluster in ``folder`` listening on 127.0.0.1:``port`` (trust authentication, loopback only)."""

    def __init__(self, folder: Path, port: int | None = None, bin_dir: Path | None = None) -> None:
        found = bin_dir or find_bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
        self.bin_dir = found
        self.folder = folder
        self.port = port or _free_port()

    @property
    def url(self) -> str:
        """The superuser's URL."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix, _, _ = _as_server_user()
        return subprocess.run(
            [*prefix, *args], check=check, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )

    def start(self) -> str:
        """Create the cluster (when new) and start it; returns the superuser URL once it accepts connections."""
        data = self.folder / "data"
        _, uid, gid = _as_server_user()
        self.folder.mkdir(parents=True, exist_ok=True)
        if uid is not None and gid is not None:
            os.chown(self.folder, uid, gid)
        if not (data / "PG_VERSION").is_file():
            self._run(
                str(self.bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
        result = self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
            "-o", f"{_SERVER_OPTIONS} -p {self.port}", "start", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(f"PostgreSQL did not start: {result.stdout}{result.stderr}\n{tail}")
        return self.url

    def stop(self) -> None:
        """Stop the server (fast: open connections are ended)."""
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop", check=False
        )


class Databases:
    """Makes (and at the end drops) fresh, empty databases on one server, each named for this test session."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.admin_url = make_url(admin_url).set(drivername="postgresql+psycopg")
        self._prefix = f"mg_test_{secrets.token_hex(4)}"
        self._counter = itertools.count(1)
        self._made: list[str] = []

    def _admin(self, sql: str) -> None:
        import psycopg

        url = self.admin_url
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database or "postgres",
            autocommit=True, connect_timeout=10,
        ) as conn:  # fmt: skip
            conn.execute(sql.encode())

    def check(self) -> None:
        """Connect once, so that an unreachable server fails with a clear message."""
        try:
            self._admin("SELECT 1")
        except Exception as exc:
            shown = self.admin_url.render_as_string(hide_password=True)
            raise RuntimeError(f"cannot connect to the test PostgreSQL server {shown}: {exc}") from exc

    def create(self) -> URL:
        """A new empty database; returns its URL (with the psycopg driver: pass it through the app's helpers)."""
        name = f"{self._prefix}_{next(self._counter)}"
        assert re.fullmatch(r"[a-z0-9_]+", name)
        self._admin(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
        self._made.append(name)
        return self.admin_url.set(database=name)

    def drop(self, url: URL) -> None:
        """Drop a database made by :meth:`create`, ending any connection still open to it."""
        name = url.database
        assert name in self._made
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._made.remove(name)

    def drop_all(self) -> None:
        """Drop every database still left."""
        for name in list(self._made):
            with contextlib.suppress(Exception):
                self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._made.remove(name)


_shared: Databases | None = None


def postgres_server() -> Databases:
    """The test server of this process (``$MINIGATE_TEST_POSTGRES_URL``, else a throwaway one started now).

    Started once per process and cleaned up when it exits; raises :class:`RuntimeError` with what to do when
    there is no way to get a server.
    """
    global _shared
    if _shared is not None:
        return _shared
    given = os.environ.get(ENV)
    if given:
        databases = Databases(given)
        databases.check()
        atexit.register(databases.drop_all)
        _shared = databases
        return databases
    if find_bin_dir() is None:
        raise RuntimeError(
            f"the PostgreSQL tests need a server: set {ENV} to a superuser URL, or install Debian's PostgreSQL "
            "(apt-get install postgresql) so that the tests can start a throwaway one"
        )
    folder = Path(tempfile.mkdtemp(prefix="minigate-pg-"))
    server = PostgresServer(folder)

    def cleanup() -> None:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(cleanup)
    databases = Databases(server.start())
    databases.check()
    atexit.register(databases.drop_all)  # runs before cleanup: the last registered runs first
    _shared = databases
    return databases


def main(argv: list[str]) -> int:
    """``start DIR PORT`` (prints the superuser URL once the server accepts connections) or ``stop DIR``."""
    if len(argv) == 3 and argv[0] == "start":
        folder = Path(argv[1])
        server = PostgresServer(folder, int(argv[2]))
        if (folder / "data" / "postmaster.pid").is_file():
            server.stop()  # left over from a run that was killed before its cleanup
        shutil.rmtree(folder, ignore_errors=True)
        print(server.start())
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        PostgresServer(Path(argv[1]), 0).stop()
        shutil.rmtree(argv[1], ignore_errors=True)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A real PostgreSQL server for the tests: initdb and pg_ctl in a temporary folder.

PostgreSQL refuses to run as root, so under root the server runs as an unprivileged user
(``nobody``, or ``mpc-pg`` made with ``useradd`` where there is no ``nobody``). It listens on a
free loopback port only (no Unix socket), and :meth:`PostgresServer.stop` stops it and removes
the folder. ``scripts/test.sh`` installs Debian's ``postgresql`` package when ``initdb`` is
missing; the binaries are looked up on PATH, then in ``/usr/lib/postgresql/*/bin``.

The server has a superuser ``postgres`` (trusted on loopback: a test server) and a role
``mpc_reader`` that may only read: what a hospital gives the site agent.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

READER = "mpc_reader"


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed: run scripts/test.sh (it installs Debian's postgresql "
            "package) or apt-get install -y postgresql"
        )
    return found


def _server_user() -> str | None:
    """The user to run the server as: None when not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("nobody", "mpc-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "mpc-pg"], check=True)
    return "mpc-pg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A running throw-away PostgreSQL server (use as a context manager)."""

    def __init__(self) -> None:
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="mpc-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)
        self._run(
            [_binary("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='' -c fsync=off"
        self._run([_binary("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "start"])
        self.sql(
            f"CREATE ROLE {READER} LOGIN",
            "CREATE DATABASE clinic",
        )

    def _run(self, argv: Sequence[str]) -> None:
        command = list(argv) if self.user is None else ["runuser", "-u", self.user, "--", *argv]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def url(self, user: str = READER, database: str = "clinic") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def sql(self, *statements: str, database: str = "postgres") -> None:
        """Run statements as the superuser (setting up tables and grants)."""
        import psycopg

        with psycopg.connect(self.url("postgres", database), autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def load(self, table: str | tuple[str, ...], columns: dict[str, str], rows: Iterable[Sequence[Any]]) -> None:
        """Create ``table`` (a name, or schema and name) in the clinic database (column -> SQL
        type), fill it with ``rows`` by COPY and let the reader role SELECT it (nothing else)."""
        import psycopg
        from psycopg import sql

        spec = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns.items())
        name = sql.Identifier(*((table,) if isinstance(table, str) else table))
        with psycopg.connect(self.url("postgres", "clinic"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(name, spec))
            with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(name)) as copy:
                for row in rows:
                    copy.write_row(row)
            conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(name, sql.Identifier(READER)))
            conn.execute(sql.SQL("ANALYZE {}").format(name))

    def stop(self) -> None:
        try:
            self._run([_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

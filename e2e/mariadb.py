"""MariaDB in the local stack: the Model Registry's database.

    mariadb     MariaDB 10.11, own datadir, database and user ``mr``    MySQL handshake on its port

Its datadir, socket, pid file and a client defaults-file for the ``mr`` user (``mr.cnf``, 0600) live in DIR/mariadb.
The OS user running the stack is MariaDB's admin through socket auth, with no password anywhere; the ``mr``
user's password (DIR/secrets/mariadb-mr-password) reaches the server through stdin, never the command line.

env:
    MARIADB_PORT
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from e2e.component import Site, StackError, find_tool, write_private

COMPONENTS = ("mariadb",)
TOOLS = {"mariadb": ("mariadbd", "mariadb-install-db", "mariadb")}
DIRS = ("mariadb",)


def mr_password(site: Site) -> str:
    """The password of the ``mr`` user (database ``mr``)."""
    return site.secret("mariadb-mr-password")


def start(site: Site) -> None:
    root = site.dir / "mariadb"
    datadir, sock = root / "data", _socket_path(root, site.ports["mariadb"])
    as_root = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root without saying so
    if not (datadir / "mysql").is_dir():
        # socket auth: the OS user running the stack is MariaDB's admin, with no password anywhere
        subprocess.run([find_tool("mariadb-install-db"), "--no-defaults", f"--datadir={datadir}", *as_root,
                        "--auth-root-authentication-method=socket",
                        f"--auth-root-socket-user={getpass.getuser()}", "--skip-test-db"],
                       check=True, capture_output=True)
    site.spawn("mariadb", [find_tool("mariadbd"), "--no-defaults", f"--datadir={datadir}", *as_root,
                           f"--port={site.ports['mariadb']}", "--bind-address=127.0.0.1",
                           f"--socket={sock}", f"--pid-file={root / 'mariadbd.pid'}",
                           "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
                           "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2",
                           "--skip-innodb-doublewrite", "--log-warnings=1"])  # 1: no note per health probe
    site.wait_healthy("mariadb")
    _create_mr_database(site, sock)


def socket_path(site: Site) -> Path:
    """The server's unix socket (also reachable from another network namespace, unlike its port)."""
    return _socket_path(site.dir / "mariadb", site.ports["mariadb"])


def admin_sql(site: Site, sql: str, *options: str) -> str:
    """Run `sql` as MariaDB's admin (the OS user, socket auth) with the client's `options` (e.g. a database, -N -B);
    its output. StackError when it fails."""
    run = subprocess.run([find_tool("mariadb"), "--no-defaults", "--protocol=socket", f"--socket={socket_path(site)}",
                          "-u", getpass.getuser(), *options], input=sql, text=True, capture_output=True)
    if run.returncode != 0:
        raise StackError(f"mariadb: {run.stderr.strip()}")
    return run.stdout


def _socket_path(root: Path, port: int) -> Path:
    # unix socket paths are limited to 108 bytes; deep temporary dirs can exceed that
    sock = root / "mariadb.sock"
    return sock if len(str(sock)) < 100 else Path("/tmp") / f"modelsync-mariadb-{port}.sock"


def _create_mr_database(site: Site, sock: Path) -> None:
    pw = mr_password(site)
    # both hosts: else the anonymous ''@'localhost' row shadows 'mr'@'%' for local connections
    sql = "CREATE DATABASE IF NOT EXISTS mr CHARACTER SET utf8mb4;\n" + "".join(
        f"CREATE USER IF NOT EXISTS 'mr'@'{h}'; ALTER USER 'mr'@'{h}' IDENTIFIED BY '{pw}';\n"
        f"GRANT ALL PRIVILEGES ON mr.* TO 'mr'@'{h}';\n" for h in ("localhost", "127.0.0.1"))
    run = subprocess.run([find_tool("mariadb"), "--no-defaults", "--protocol=socket", f"--socket={sock}",
                          "-u", getpass.getuser()], input=sql, text=True, capture_output=True)
    if run.returncode != 0:
        raise StackError(f"mariadb: creating database mr: {run.stderr.strip()}")
    # a client defaults-file for people and tests: `mariadb --defaults-file=DIR/mariadb/mr.cnf mr`
    write_private(site.dir / "mariadb" / "mr.cnf", f"[client]\nuser=mr\npassword={pw}\nhost=127.0.0.1\n"
                                                    f"port={site.ports['mariadb']}\ndatabase=mr\n")


def mysql_greets(port: int) -> bool:
    """MariaDB speaks first: a handshake packet with protocol version 10 means it accepts connections."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return len(packet := s.recv(64)) > 4 and packet[4] == 10
    except OSError:
        return False


def healthy(site: Site, name: str, port: int) -> bool:
    return mysql_greets(port)


def env(site: Site, port: Mapping[str, int]) -> dict[str, str]:
    return {"MARIADB_PORT": str(port["mariadb"])}

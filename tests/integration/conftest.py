"""Fixtures of the integration suite, which scripts/test-integration runs.

The suite needs Django, Channels, Daphne, Uvicorn and their clients, which only
the environment that script builds has: anywhere else (the default test run,
the upstream run) this directory is not even collected.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
_NEEDED = (
    "django",
    "channels",
    "channels_redis",
    "psycopg",
    "daphne",
    "uvicorn",
    "httpx",
    "websockets",
)

if not all(importlib.util.find_spec(name) for name in _NEEDED):
    collect_ignore_glob = ["*"]
else:
    sys.path.insert(0, str(HERE / "project"))

    from harness import (
        PostgresServer,
        RedisServer,
        Server,
        assert_clean_shutdown,
        copy_database,
        migrated_database,
        postgres_bindir,
        start_postgres,
        start_redis,
        start_server,
    )

    @pytest.fixture(scope="session")
    def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return migrated_database(tmp_path_factory.mktemp("template") / "db.sqlite3")

    @pytest.fixture(scope="session")
    def start(
        tmp_path_factory: pytest.TempPathFactory, template_db: Path
    ) -> Iterator[Any]:
        """Start servers; any still running when the session ends are stopped."""
        started: list[Server] = []

        def start_one(
            kind: str,
            app: str,
            *,
            with_db: bool = True,
            env: dict[str, str] | None = None,
        ) -> Server:
            workdir = tmp_path_factory.mktemp(f"{kind}-server")
            db = copy_database(template_db, workdir / "db.sqlite3") if with_db else None
            server = start_server(kind, app, workdir, db=db, env=env)
            started.append(server)
            return server

        yield start_one
        for server in started:
            server.stop()

    @pytest.fixture(scope="session", params=["uvicorn", "daphne"])
    def django_server(request: pytest.FixtureRequest, start: Any) -> Iterator[Server]:
        """The demo Django + Channels project, served over ASGI."""
        server = start(request.param, "demo_site.asgi:application")
        yield server
        assert_clean_shutdown(server)

    @pytest.fixture(scope="session")
    def django_in_process(
        tmp_path_factory: pytest.TempPathFactory, template_db: Path
    ) -> Path:
        """Set Django up in the test process itself, on its own database copy."""
        db = copy_database(
            template_db, tmp_path_factory.mktemp("in-process") / "db.sqlite3"
        )
        os.environ["DEMO_DB"] = str(db)
        os.environ["DJANGO_SETTINGS_MODULE"] = "demo_site.settings"
        import django

        django.setup()
        return db

    @pytest.fixture
    def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
        """A Redis server of the test's own, stopped when the test ends.

        Skipped only where Debian's redis-server is not installed at all
        (scripts/ci-system-packages installs it); any other failure to start
        fails the test.
        """
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.skip("redis-server is not installed (scripts/ci-system-packages)")
        workdir = tmp_path / "redis"
        workdir.mkdir()
        server = start_redis(workdir, executable)
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture(scope="module")
    def postgres_server(
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[PostgresServer]:
        """A PostgreSQL cluster of the module's own, stopped and deleted after.

        Skipped only where Debian's PostgreSQL server is not installed at all
        (scripts/ci-system-packages installs it); any other failure to start
        fails the tests.
        """
        bindir = postgres_bindir()
        if bindir is None:
            pytest.skip("postgresql is not installed (scripts/ci-system-packages)")
        log = tmp_path_factory.mktemp("postgres") / "postgres.log"
        server = start_postgres(bindir, log)
        try:
            yield server
        finally:
            server.stop()

"""Persistent database connections under ASGI, counted by a real PostgreSQL.

A one-view Django project (``project/pg_site``: one query per request) under
Uvicorn, with ``CONN_MAX_AGE`` 60 and 0, on upstream asgiref 3.13.0 and on
asgire with reusable request threads off (upstream's behaviour) and on. The
server itself tells what happened: each connection it accepted is in its log
(``log_connections``), and the ones open now are in ``pg_stat_activity``,
found by the application name the project's connections carry.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import (
    PROJECT,
    PostgresServer,
    Server,
    assert_clean_shutdown,
    unpack_upstream_asgiref,
)

pytestmark = pytest.mark.integration

SEQUENTIAL = 100
CLIENTS = 8
PER_CLIENT = 25
_names = itertools.count()


@dataclass
class Run:
    """What a server answered, and what PostgreSQL saw meanwhile."""

    server: Server
    postgres: PostgresServer
    app: str
    answers: list[dict[str, Any]] = field(default_factory=list)
    peak_open: int = 0

    def drive(self, requests: int, *, clients: int = 1, sleep: float = 0.0) -> None:
        """``requests`` requests from each of ``clients`` clients at once
        (one keep-alive connection each), noting the peak of open backends."""

        def client(_: int) -> list[dict[str, Any]]:
            with httpx.Client(base_url=self.server.url, timeout=30) as http:
                answers = []
                for n in range(requests):
                    response = http.get("/query/", params={"sleep": sleep})
                    assert response.status_code == 200, response.text
                    answers.append(response.json())
                    if clients == 1 and n % 10 == 0:
                        self.note_open()
                return answers

        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(client, n) for n in range(clients)]
            while not all(f.done() for f in futures):
                self.note_open()
                time.sleep(0.02)
            for future in futures:
                self.answers += future.result()
        self.note_open()

    def note_open(self) -> int:
        now = len(self.open_backends())
        self.peak_open = max(self.peak_open, now)
        return now

    def open_backends(self) -> list[tuple[int, Any]]:
        return self.postgres.backends(self.app)

    def connections_made(self) -> int:
        return self.postgres.connections_authorized(self.app)

    def threads(self) -> set[str]:
        return {answer["thread"] for answer in self.answers}

    def backends(self) -> set[int]:
        return {answer["backend"] for answer in self.answers}

    def collect(self) -> None:
        """A full garbage collection in the server."""
        with httpx.Client(base_url=self.server.url, timeout=30) as http:
            assert http.get("/collect/").status_code == 200

    def request_threads(self) -> dict[str, Any]:
        with httpx.Client(base_url=self.server.url, timeout=30) as http:
            return http.get("/request-threads/").json()

    def wait_until_open(self, count: int, limit: float) -> float:
        """Seconds until at most ``count`` backends are open; fails after
        ``limit``."""
        started = time.monotonic()
        while (open_now := self.note_open()) > count:
            waited = time.monotonic() - started
            assert waited < limit, f"{open_now} backends still open after {waited}s"
            time.sleep(0.1)
        return time.monotonic() - started


@pytest.fixture
def serve(postgres_server: PostgresServer, start: Any, tmp_path: Path) -> Iterator[Any]:
    """``serve(provider, conn_max_age, request_threads=None)``: the project
    under Uvicorn; ``provider`` "asgire" or "upstream"; ``request_threads``
    "max_threads:idle_timeout" turns the switch on (asgire only)."""
    runs: list[Run] = []

    def serve_one(
        provider: str, conn_max_age: int, request_threads: str | None = None
    ) -> Run:
        app = f"pg-{provider}-{next(_names)}"
        env = {
            "DJANGO_SETTINGS_MODULE": "pg_site.settings",
            "DEMO_PG_PORT": str(postgres_server.port),
            "DEMO_PG_APP": app,
            "DEMO_CONN_MAX_AGE": str(conn_max_age),
        }
        if provider == "upstream":
            upstream = unpack_upstream_asgiref(tmp_path / f"upstream-{app}")
            env["PYTHONPATH"] = f"{upstream}:{PROJECT}"
        if request_threads is not None:
            env["DEMO_REQUEST_THREADS"] = request_threads
        server = start("uvicorn", "pg_site.asgi:application", with_db=False, env=env)
        run = Run(server, postgres_server, app)
        runs.append(run)
        return run

    yield serve_one
    for run in runs:
        assert_clean_shutdown(run.server)
        # Every connection ends with the server process at the latest.
        run.wait_until_open(0, limit=10)


@pytest.mark.parametrize("provider", ["upstream", "asgire"])
def test_without_the_switch_persistent_connections_are_never_reused(
    serve: Any, provider: str
) -> None:
    """Upstream's behaviour: every request runs on a thread of its own, opens
    a connection there, and leaves it open, unreachable, until the garbage
    collector finds it."""
    run = serve(provider, conn_max_age=60)
    status = run.request_threads()["status"]
    if provider == "upstream":
        assert status is None
    else:
        assert status["enabled"] is False
    run.drive(SEQUENTIAL)
    run.drive(PER_CLIENT, clients=CLIENTS)
    requests = SEQUENTIAL + CLIENTS * PER_CLIENT
    assert len(run.answers) == requests
    assert len(run.threads()) == requests
    assert len(run.backends()) == requests
    assert run.connections_made() == requests
    left_open = run.note_open()
    print(
        f"{provider}, switch off, CONN_MAX_AGE=60: {requests} requests, "
        f"{requests} connections, at most {run.peak_open} open at once, "
        f"{left_open} left open"
    )
    # What is left open is garbage: a full collection closes all of it.
    run.collect()
    run.wait_until_open(0, limit=5)


@pytest.mark.asgire_only
def test_with_the_switch_each_request_thread_keeps_its_connection(
    serve: Any,
) -> None:
    """One connection per request thread, reused by every request that thread
    serves; threads, and so connections, are no more than the requests the
    server ever ran at once; once the threads retire, PostgreSQL sees their
    connections close without anything else asking."""
    run = serve("asgire", conn_max_age=60, request_threads=":60")
    run.drive(SEQUENTIAL)
    info = run.request_threads()
    # A thread starts only while every other one serves a request in flight.
    # One client, one request at a time: the next request may start while the
    # previous one finishes (Django sends the response before it signals
    # request_finished), so usually two.
    assert len(run.threads()) <= info["status"]["started"] <= info["peak_in_flight"]
    assert run.connections_made() == len(run.threads())

    run.drive(PER_CLIENT, clients=CLIENTS)
    info = run.request_threads()
    status = info["status"]
    started = status["started"]
    assert len(run.threads()) <= started <= info["peak_in_flight"]
    # Each thread opened one connection and kept it; no other was made.
    pairs = {(answer["thread"], answer["backend"]) for answer in run.answers}
    assert len(pairs) == len(run.threads()) == len(run.backends())
    assert run.connections_made() == len(run.threads())
    assert run.peak_open <= started
    assert status["busy"] == 1  # the status request's own thread
    assert status["waiting"] == 0
    print(
        f"asgire, switch on, CONN_MAX_AGE=60: {len(run.answers)} requests, "
        f"{run.connections_made()} connections, {started} threads "
        f"(at most {info['peak_in_flight']} requests at once), "
        f"at most {run.peak_open} open at once"
    )

    # The connections are in use, not garbage: a collection leaves them.
    still_open = run.note_open()
    assert still_open >= 1
    run.collect()
    assert run.note_open() == still_open

    # A short idle timeout, and nothing more asked of the server: its threads
    # retire, and their connections close.
    with httpx.Client(base_url=run.server.url, timeout=30) as http:
        http.get("/request-threads/", params={"idle_timeout": 1.0})
    run.wait_until_open(0, limit=30)
    status = run.request_threads()["status"]
    assert status["retired"] >= started
    assert status["busy"] == 1


@pytest.mark.asgire_only
def test_max_threads_makes_requests_wait_for_a_thread(serve: Any) -> None:
    """More clients than threads: requests wait for a free thread, never
    share one; connections never outnumber the threads."""
    max_threads = 3
    run = serve("asgire", conn_max_age=60, request_threads=f"{max_threads}:")
    run.drive(10, clients=4 * max_threads, sleep=0.02)
    assert len(run.answers) == 10 * 4 * max_threads
    assert len(run.threads()) <= max_threads
    pairs = {(answer["thread"], answer["backend"]) for answer in run.answers}
    assert len(pairs) == len(run.threads()) == len(run.backends())
    assert run.connections_made() <= max_threads
    assert run.peak_open <= max_threads
    status = run.request_threads()["status"]
    assert status["started"] <= max_threads
    assert status["waiting"] == 0


@pytest.mark.parametrize(
    ("provider", "request_threads"),
    [("upstream", None), ("asgire", None), ("asgire", ":60")],
    ids=["upstream", "asgire-off", "asgire-on"],
)
def test_conn_max_age_0_closes_every_connection_with_or_without_the_switch(
    serve: Any, provider: str, request_threads: str | None
) -> None:
    """Django closes its connection at the end of every request: one
    connection per request, none left open, whichever thread served it."""
    run = serve(provider, conn_max_age=0, request_threads=request_threads)
    run.drive(SEQUENTIAL)
    run.drive(PER_CLIENT, clients=CLIENTS)
    requests = SEQUENTIAL + CLIENTS * PER_CLIENT
    assert len(run.backends()) == requests
    assert run.connections_made() == requests
    run.wait_until_open(0, limit=5)
    # Only thread identity differs.
    if request_threads is None:
        assert len(run.threads()) == requests
    else:
        info = run.request_threads()
        assert len(run.threads()) <= info["status"]["started"]
        assert info["status"]["started"] <= info["peak_in_flight"] < requests

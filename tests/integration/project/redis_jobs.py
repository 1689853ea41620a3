"""A sync job (a Celery task, a management command) that talks to Redis
through ``async_to_sync``, with and without ``AsyncSingleThreadContext``.

    python redis_jobs.py PORT CALLS

Runs each scenario against the Redis server on 127.0.0.1:PORT and prints one
JSON object: what the job saw (each call's error, or null) and what Redis saw
(connections opened, connections still open afterwards, messages delivered,
commands carried out). It runs on whichever asgiref is importable, so the same
job can be compared between asgire and upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from channels_redis.core import RedisChannelLayer
from redis import asyncio as aioredis

import asgiref
from asgiref.sync import AsyncSingleThreadContext, async_to_sync


def one_loop_if(wanted: bool) -> contextlib.AbstractContextManager[Any]:
    return AsyncSingleThreadContext() if wanted else contextlib.nullcontext()


def notify(layer: RedisChannelLayer, user_id: int) -> None:
    async_to_sync(layer.group_send)(
        f"user-{user_id}", {"type": "notify", "text": f"hello {user_id}"}
    )


def notify_all(layer: RedisChannelLayer, user_ids: list[int]) -> None:
    """The README's job: one ``group_send`` per user, from sync code."""
    with AsyncSingleThreadContext():  # one loop for the whole job
        for user_id in user_ids:
            notify(layer, user_id)


def outcome(call: Callable[[], object]) -> str | None:
    """None if ``call`` returned, else its error as ``Type: message``."""
    try:
        call()
    except Exception as error:  # reported as data: the caller judges it
        return f"{type(error).__name__}: {error}"
    return None


class Watch:
    """Redis's own counts, read over one connection kept for the whole run
    (so that it never counts itself as a new one)."""

    def __init__(self, port: int) -> None:
        self.client = redis.Redis(host="127.0.0.1", port=port)

    def opened(self) -> int:
        return int(self.client.info("stats")["total_connections_received"])

    def open_clients(self) -> int:
        return int(self.client.info("clients")["connected_clients"])

    def clients_left(self, baseline: int) -> int:
        """Clients open beyond ``baseline``, once closes have reached Redis."""
        deadline = time.monotonic() + 5
        while self.open_clients() > baseline and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.open_clients() - baseline

    @contextlib.contextmanager
    def counting(self, into: dict[str, Any]) -> Iterator[None]:
        opened, open_clients = self.opened(), self.open_clients()
        yield
        into["connections_opened"] = self.opened() - opened
        into["connections_left_open"] = self.clients_left(open_clients)


def layer_scenario(
    watch: Watch, port: int, calls: int, one_loop: bool
) -> dict[str, Any]:
    """``calls`` group_sends, each to its own user's group, then every
    user's consumer channel is read back."""
    hosts = [("127.0.0.1", port)]
    consumer = RedisChannelLayer(hosts=hosts)
    user_ids = list(range(calls))

    async def subscribe() -> list[str]:
        channels = []
        for user_id in user_ids:
            channel = await consumer.new_channel()
            await consumer.group_add(f"user-{user_id}", channel)
            channels.append(channel)
        return channels

    async def text_from(channel: str) -> str | None:
        try:
            message = await asyncio.wait_for(consumer.receive(channel), 5)
        except TimeoutError:
            return None
        return message["text"]

    async def collect(channels: list[str]) -> list[str | None]:
        return [await text_from(channel) for channel in channels]

    channels = asyncio.run(subscribe())
    layer = RedisChannelLayer(hosts=hosts)
    report: dict[str, Any] = {}
    with watch.counting(report), one_loop_if(one_loop):
        errors = [outcome(functools.partial(notify, layer, u)) for u in user_ids]
    report["errors"] = errors
    report["delivered"] = asyncio.run(collect(channels))
    return report


def client_scenario(
    watch: Watch, port: int, calls: int, one_loop: bool
) -> dict[str, Any]:
    """One ``redis.asyncio`` client made once and used by every call."""
    key = f"counter-{one_loop}"
    watch.client.delete(key)
    client = aioredis.Redis(host="127.0.0.1", port=port)

    async def increment() -> None:
        await client.incr(key)

    async def close() -> None:
        await client.aclose()

    report: dict[str, Any] = {}
    with watch.counting(report), one_loop_if(one_loop):
        report["errors"] = [outcome(async_to_sync(increment)) for _ in range(calls)]
        report["close"] = outcome(async_to_sync(close))
    report["increments_done"] = int(watch.client.get(key) or 0)
    return report


def main() -> None:
    port, calls = int(sys.argv[1]), int(sys.argv[2])
    watch = Watch(port)
    results: dict[str, Any] = {"asgiref": asgiref.__file__}
    for one_loop in (False, True):
        suffix = "-one-loop" if one_loop else ""
        results[f"layer{suffix}"] = layer_scenario(watch, port, calls, one_loop)
        results[f"client{suffix}"] = client_scenario(watch, port, calls, one_loop)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

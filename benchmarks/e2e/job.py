"""A sync job making many ``async_to_sync`` calls, for run.py; it runs on
whichever asgiref is importable.

    python job.py CALLS [REDIS_PORT]

Prints one JSON object: the seconds CALLS calls to a trivial coroutine take
without and with ``AsyncSingleThreadContext`` and, given a Redis port (and
channels_redis installed), the same for Channels' Redis layer ``group_send``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import AsyncSingleThreadContext, async_to_sync


async def nothing() -> None:
    pass


def timed(calls: int, func: Callable[[], Awaitable[Any]], one_loop: bool) -> float:
    call = async_to_sync(func)
    started = time.perf_counter()
    with AsyncSingleThreadContext() if one_loop else contextlib.nullcontext():
        for _ in range(calls):
            call()
    return time.perf_counter() - started


def main() -> None:
    calls = int(sys.argv[1])
    timed(calls // 10, nothing, False)  # warm-up: imports, first loop thread
    results = {
        "coroutine": timed(calls, nothing, False),
        "coroutine-one-loop": timed(calls, nothing, True),
    }
    if len(sys.argv) > 2:
        from channels_redis.core import RedisChannelLayer

        layer = RedisChannelLayer(hosts=[("127.0.0.1", int(sys.argv[2]))])

        async def send() -> None:
            await layer.group_send("users", {"type": "notify", "text": "hello"})

        results["group_send"] = timed(calls, send, False)
        results["group_send-one-loop"] = timed(calls, send, True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()

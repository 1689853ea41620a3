"""200 concurrent requests against the async views, half of them writing."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from harness import Server, assert_clean_shutdown

pytestmark = pytest.mark.integration

REQUESTS = 200


async def _one(
    client: httpx.AsyncClient, kind: str, index: int
) -> tuple[int, bytes, bytes]:
    token = f"{kind}-load-{index:03d}"
    headers = {"X-Token": token}
    match index % 4:
        case 0:
            response = await client.get("/async/hello/", headers=headers)
            expected = (
                "view-async trail=sync-outer:thread,async-middle:loop,hybrid-sync:thread,"
                f"sync-inner:thread,view-async:loop local={token}/{token} sync_threads=1\n"
            )
            return response.status_code, response.content, expected.encode()
        case 1 | 2:
            via = "orm-async" if index % 4 == 1 else "sync-to-async"
            response = await client.post(
                "/async/notes/",
                data={"token": token, "text": f"load {index}", "via": via},
                headers=headers,
            )
            expected = f"created {token} via {via} local={token}\n"
            return response.status_code - 1, response.content, expected.encode()
        case _:
            response = await client.post(
                "/async/notes/atomic/", data={"token": token}, headers=headers
            )
            return response.status_code, response.content, b"committed\n"


def _expected_rows(kind: str) -> set[tuple[str, str]]:
    rows: set[tuple[str, str]] = set()
    for index in range(REQUESTS):
        token = f"{kind}-load-{index:03d}"
        match index % 4:
            case 1:
                rows.add((token, "orm-async"))
            case 2:
                rows.add((token, "sync-to-async"))
            case 3:
                rows.update({(f"{token}-a", "atomic"), (f"{token}-b", "atomic")})
    return rows


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
async def test_concurrent_requests_with_orm_writes(start: Any, kind: str) -> None:
    server: Server = await asyncio.to_thread(start, kind, "demo_site.asgi:application")
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(
        base_url=server.url, timeout=45, limits=limits
    ) as client:
        results = await asyncio.gather(
            *(_one(client, kind, i) for i in range(REQUESTS))
        )
    # Status 201 is shifted to 200 above so that every result reads the same.
    failures = [(i, r) for i, r in enumerate(results) if r[0] != 200 or r[1] != r[2]]
    assert not failures, (
        f"{len(failures)} bad responses, first {failures[:3]}\n{server.log()}"
    )

    rows = set(
        server.rows(
            f"SELECT token, via FROM demo_app_note WHERE token LIKE '{kind}-load-%'"
        )
    )
    assert rows == _expected_rows(kind)
    await asyncio.to_thread(assert_clean_shutdown, server)
    assert "Traceback" not in server.log()

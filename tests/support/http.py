"""The HTTP API as a client sees it: the tests' token and polling a JSON route until it says what a test waits for."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

TOKEN = "t0ken-for-tests"


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def poll(http: aiohttp.ClientSession, url: str, check, timeout: float) -> dict:
    """GET `url` (JSON) until `check(body)` holds; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get(url) as resp:
                body = await resp.json() if resp.status == 200 else {"status": resp.status}
        except aiohttp.ClientConnectionError:
            body = {"status": "unreachable"}
        if check(body):
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"{url} never matched within {timeout} s: {body}")
        await asyncio.sleep(0.1)

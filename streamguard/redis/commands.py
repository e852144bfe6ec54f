"""`streamguard subscribe`: read events from the durable Redis Stream.

With `--group`, it reads through a consumer group (XREADGROUP, XACK after each event
is printed), so a subscriber that was offline gets everything it missed, and several
consumers of one group share the work. It first re-reads its own pending entries
(delivered before a crash, never acknowledged), then new ones. Without a group it
follows the Stream from now on (or from the start with `--from-start`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from streamguard.events import parse_any_event
from streamguard.redis.subscriber import format_event
from streamguard.config import RedisConfig
from streamguard.errors import ConfigError, StreamguardError
from streamguard.redact import redact_url

BLOCK_MS = 1000


def render(payload: bytes, as_json: bool) -> str:
    """An event as one readable line; anything unknown as compact JSON."""
    if as_json:
        return payload.decode()
    try:
        return format_event(parse_any_event(payload))
    except ValidationError:
        return json.dumps(json.loads(payload), separators=(",", ":"))


def stream_of(payload: bytes) -> str | None:
    try:
        return json.loads(payload).get("stream")
    except (ValueError, AttributeError):
        return None


async def entries(
    client: aioredis.Redis, key: str, group: str | None, consumer: str, from_start: bool
) -> AsyncIterator[tuple[bytes, bytes]]:
    """(entry id, event JSON) forever; the caller acknowledges group entries."""
    if group is None:
        last = "0" if from_start else "$"
        while True:
            for _, items in await client.xread({key: last}, block=BLOCK_MS) or []:
                for entry_id, fields in items:
                    last = entry_id
                    yield entry_id, fields[b"event"]
        return
    try:
        await client.xgroup_create(key, group, id="0", mkstream=True)
    except ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise
    cursor = "0"  # own pending entries first, then new ones
    while True:
        reply = await client.xreadgroup(group, consumer, {key: cursor}, block=BLOCK_MS)
        items = reply[0][1] if reply else []
        if cursor == "0" and not items:
            cursor = ">"
        for entry_id, fields in items:
            yield entry_id, fields.get(b"event", b"{}")


async def subscribe(args: argparse.Namespace, url: str, cfg: RedisConfig) -> int:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=3.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    printed = 0
    try:
        reader = entries(client, cfg.stream_key, args.group, args.consumer, args.from_start)
        while not stop.is_set():
            next_entry = asyncio.ensure_future(anext(reader))
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({next_entry, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if next_entry not in done:
                next_entry.cancel()
                await asyncio.gather(next_entry, return_exceptions=True)
                break
            entry_id, payload = next_entry.result()
            if args.stream is None or stream_of(payload) == args.stream:
                print(render(payload, args.json), flush=True)
                printed += 1
            if args.group is not None:
                await client.xack(cfg.stream_key, args.group, entry_id)
            if args.count is not None and printed >= args.count:
                break
    except RedisConnectionError as err:
        raise StreamguardError(f"cannot read events from Redis at {redact_url(url)}: {err}") from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await client.aclose()
    return 0


def cmd_subscribe(args: argparse.Namespace) -> int:
    from streamguard.config import load_config

    cfg = load_config(args.config, {"redis.url": args.redis_url}).redis
    url = cfg.url or os.environ.get("STREAMGUARD_REDIS_URL")
    if not url:
        raise ConfigError("subscribe needs --redis-url (or redis.url in the config, or STREAMGUARD_REDIS_URL)")
    if args.count is not None and args.count < 1:
        raise ConfigError(f"--count must be >= 1, got {args.count}")
    return asyncio.run(subscribe(args, url, cfg))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("subscribe", help="print events from the Redis event Stream (optionally via a consumer group)")
    p.add_argument("--redis-url", help="redis://host:port/db")
    p.add_argument("--config", help="YAML config (for redis.stream_key and redis.url)")
    p.add_argument("--stream", help="only events of this stream")
    p.add_argument("--group", help="consumer group: resume where the group left off, acknowledging each event")
    p.add_argument("--consumer", default=f"{os.uname().nodename}-{os.getpid()}", help="consumer name within the group")
    p.add_argument("--from-start", action="store_true", help="without --group: replay the Stream from its start")
    p.add_argument("--json", action="store_true", help="print each event's JSON instead of a readable line")
    p.add_argument("--count", type=int, help="exit after printing this many events")
    p.set_defaults(func=cmd_subscribe)

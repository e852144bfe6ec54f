"""The console through `run --processes N`'s front door: one page for every worker's streams.

The page and its files are served by the front door itself; its data comes from the
workers, each of which runs the console for its own streams: the stream list is merged
(each status with its "worker"), a stream's picture and score history come from the
worker that holds it, an alert's face from whichever worker kept it, and the feed is
every worker's feed merged into one event stream (a worker that restarts is joined again
when it is back; its alerts from before the restart are gone with it). The front door
checks the token, then sends it on to the workers, as for the API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from streamguard.config import HttpConfig
from streamguard.server import console

log = logging.getLogger(__name__)


class WorkerLink(Protocol):
    """A worker as the front door knows it (front_door.WorkerLink): its API's URL while it runs."""

    index: int
    url: str | None


class FrontDoor(Protocol):
    """What the console needs of the front door (front_door.FrontDoor), which builds it."""

    cfg: HttpConfig
    registry: CollectorRegistry
    workers: Sequence[WorkerLink]


REJOIN_S = 1.0  # a worker's feed that ended (restart) is asked for again this often
MERGED_QUEUE = 1024  # feed events waiting for one page; a slower page loses the oldest
PASSED = ("Content-Type", "X-Streamguard-Faces", "X-Streamguard-Frame-Age")
TIMEOUT = aiohttp.ClientTimeout(total=10.0)
HOLDINGS_S = 2.0  # which worker holds which stream, remembered this long (a stream that moved: 404 for a moment)


class ConsoleFront:
    """The console's routes on the front door's app; owns the HTTP client it asks the workers with."""

    def __init__(self, front: FrontDoor) -> None:
        self.front = front
        self.auth = {"Authorization": f"Bearer {front.cfg.token}"} if front.cfg.token else {}
        self._http: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()
        self._holdings: tuple[float, dict[int, set[str]]] = (float("-inf"), {})
        self.dropped = Counter("streamguard_console_front_feed_dropped", "Feed events a slow console page lost at the front door",
                               registry=front.registry)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", console.page)
        app.router.add_get(console.PUBLIC_PREFIX + "{file}", console.static)
        app.router.add_get("/console/api/streams", self.streams)
        app.router.add_get("/console/api/streams/{name}/snapshot.jpg", self.to_owner)
        app.router.add_get("/console/api/streams/{name}/history", self.to_owner)
        app.router.add_get("/console/api/alerts/{id}/face.jpg", self.face)
        app.router.add_get("/console/api/feed", self.feed)
        app.on_response_prepare.append(console._console_headers)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._close)

    async def _start(self, app: web.Application) -> None:
        self._http = aiohttp.ClientSession(timeout=TIMEOUT)

    async def _shutdown(self, app: web.Application) -> None:
        self._closing.set()  # open feeds end now

    async def _close(self, app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()

    def _up(self) -> list[WorkerLink]:
        return [link for link in self.front.workers if link.url is not None]

    async def _get(self, link: WorkerLink, path: str) -> tuple[int, dict[str, str], bytes]:
        assert self._http is not None and link.url is not None
        async with self._http.get(link.url + path, headers=self.auth) as resp:
            return resp.status, {k: resp.headers[k] for k in PASSED if k in resp.headers}, await resp.read()

    async def _each(self, path: str) -> dict[int, tuple[int, dict[str, str], bytes]]:
        links = self._up()
        answers = await asyncio.gather(*(self._get(link, path) for link in links), return_exceptions=True)
        found = {}
        for link, answer in zip(links, answers, strict=True):
            if isinstance(answer, (aiohttp.ClientError, TimeoutError)):
                log.warning("console: worker %d did not answer %s: %s", link.index, path, answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                found[link.index] = answer
        return found

    async def streams(self, request: web.Request) -> web.Response:
        merged: list[dict[str, Any]] = []
        watched: list[str] = []
        for index, (status, _, body) in sorted((await self._each("/console/api/streams")).items()):
            if status == 200:
                data = json.loads(body)
                merged += [{**s, "worker": index} for s in data["streams"]]
                watched += data["watched"]
        return web.json_response({"streams": merged, "watched": sorted(watched)})

    async def to_owner(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        path = f"/console/api/streams/{urllib.parse.quote(name, safe='')}"
        owner = await self._owner(name)
        if owner is None:
            raise web.HTTPNotFound(text=f"no stream named {name}")
        if owner.url is None:
            raise web.HTTPServiceUnavailable(text=f"worker {owner.index}, which holds {name}, is restarting")
        try:
            status, headers, body = await self._get(owner, f"{path}/{request.path.rsplit('/', 1)[1]}")
        except (aiohttp.ClientError, TimeoutError) as err:
            raise web.HTTPBadGateway(text=f"worker {owner.index} did not answer: {err}") from None
        return web.Response(status=status, body=body if status != 204 else None, headers=headers)

    async def _owner(self, name: str) -> WorkerLink | None:
        """The worker holding `name`, from the workers' stream lists asked at most once per HOLDINGS_S (pictures of
        16 streams at 1/s would otherwise ask every worker 16 times a second)."""
        now = time.monotonic()
        if now - self._holdings[0] > HOLDINGS_S or not any(name in names for names in self._holdings[1].values()):
            self._holdings = (now, {i: {s["name"] for s in json.loads(body)["streams"]}
                                    for i, (status, _, body) in (await self._each("/streams")).items() if status == 200})
        holders = self._holdings[1]
        return next((self.front.workers[i] for i in sorted(holders) if name in holders[i]), None)

    async def face(self, request: web.Request) -> web.Response:
        path = f"/console/api/alerts/{urllib.parse.quote(request.match_info['id'], safe='')}/face.jpg"
        for status, headers, body in (await self._each(path)).values():
            if status == 200:
                return web.Response(body=body, headers=headers)
        raise web.HTTPNotFound(text="no worker kept a face for that alert")

    async def feed(self, request: web.Request) -> web.StreamResponse:
        """Every worker's feed as one: whole events relayed as they come, through a bounded queue."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(MERGED_QUEUE)
        relays = [asyncio.create_task(self._relay(link, queue), name=f"console-feed-{link.index}")
                  for link in self.front.workers]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            while not self._closing.is_set():
                try:
                    event = await asyncio.wait_for(queue.get(), console.KEEPALIVE_S)
                except TimeoutError:
                    event = b": keep-alive\n\n"
                await response.write(event)
        except ConnectionResetError:
            pass
        finally:
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
        return response

    async def _relay(self, link: WorkerLink, queue: asyncio.Queue[bytes]) -> None:
        """One worker's feed into `queue`, event by event; joined again after the worker restarts."""
        assert self._http is not None
        while True:
            if link.url is not None:
                try:
                    async with self._http.get(link.url + "/console/api/feed", headers=self.auth,
                                              timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as resp:
                        if resp.status == 200:
                            buffer = b""
                            async for chunk in resp.content.iter_any():
                                buffer += chunk
                                *events, buffer = buffer.split(b"\n\n")
                                for event in events:
                                    if event and not event.startswith(b":"):
                                        if queue.full():
                                            queue.get_nowait()  # the page is too slow: its oldest event goes
                                            self.dropped.inc()
                                        queue.put_nowait(event + b"\n\n")
                except (aiohttp.ClientError, TimeoutError) as err:
                    log.debug("console: worker %d's feed ended: %s", link.index, err)
            await asyncio.sleep(REJOIN_S)

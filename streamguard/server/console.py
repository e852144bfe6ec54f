"""The live console's routes: the page at /, its static files, and the JSON, pictures and feed it reads.

    GET /                                        the page (no token: it holds no data; it asks for the token)
    GET /console/static/{file}                   its CSS and ES modules, served from the package (no token)
    GET /console/api/streams                     every stream's status, analysed fps, latency, faces and scores
    GET /console/api/streams/{name}/snapshot.jpg the latest analysed frame, faces boxed (204 before the first)
    GET /console/api/streams/{name}/history      each identity's window scores over the last minutes, alert spans
    GET /console/api/alerts/{id}/face.jpg        an alert's face crop (kept in memory, not read from Redis)
    GET /console/api/feed                        server-sent events: alerts, updates, clears, stream states

Auth: everything under /console/api needs the API's bearer token in the Authorization
header, like the API itself; the page keeps the token in sessionStorage (asked once
per browser session, gone when the tab closes) and sends it with fetch(), the feed
included: the page reads the event stream with fetch() rather than EventSource, which
cannot send headers. So the token is never in a URL, a log or a cookie, and with no
cookie there is nothing a cross-site page could ride on. No CORS header is ever sent on
these routes, whatever http.cors_origins says, and every answer forbids framing and
loading anything from elsewhere (Content-Security-Policy).
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

from aiohttp import web

from streamguard.console.feed import FeedFull
from streamguard.console.hub import ConsoleHub
from streamguard.console.snapshots import Snapshots
from streamguard.pipeline import StreamWorker
from streamguard.server import api
from streamguard.server.middleware import CONSOLE_ASSETS

HUB = web.AppKey("console_hub", ConsoleHub)
SNAPSHOTS = web.AppKey("console_snapshots", Snapshots)
RATES = web.AppKey("console_rates", dict)

STATIC = resources.files("streamguard.console") / "static"
STATIC_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml",
                ".png": "image/png"}
PUBLIC_PREFIX = CONSOLE_ASSETS  # served without the token (middleware.bearer_auth)
KEEPALIVE_S = 15.0
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; connect-src 'self'; style-src 'self'; "
                               "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def is_console(path: str) -> bool:
    return path == "/" or path.startswith("/console/")


def add_routes(app: web.Application, hub: ConsoleHub | None = None) -> None:
    """The console's routes on the API's app; none without a hub (the composition root makes one when enabled)."""
    if hub is None or not hub.cfg.enabled:
        return
    app[HUB] = hub
    app[SNAPSHOTS] = Snapshots(hub.cfg)
    app[RATES] = {}
    app.router.add_get("/", page)
    app.router.add_get(PUBLIC_PREFIX + "{file}", static)
    app.router.add_get("/console/api/streams", streams)
    app.router.add_get("/console/api/streams/{name}/snapshot.jpg", snapshot)
    app.router.add_get("/console/api/streams/{name}/history", history)
    app.router.add_get("/console/api/alerts/{id}/face.jpg", face)
    app.router.add_get("/console/api/feed", feed)
    app.on_response_prepare.append(_console_headers)
    app.on_startup.append(_start)
    app.on_shutdown.append(_end_feeds)
    app.on_cleanup.append(_close)


async def _start(app: web.Application) -> None:
    await app[SNAPSHOTS].start()


async def _end_feeds(app: web.Application) -> None:
    app[HUB].feed.close()  # open feeds end now, not after the shutdown timeout


async def _close(app: web.Application) -> None:
    await app[SNAPSHOTS].close()


async def _console_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Runs as the answer is sent, after every middleware: the console is same-origin only."""
    if is_console(request.path):
        for name in [h for h in response.headers if h.lower().startswith("access-control-")]:
            del response.headers[name]
        response.headers.update(SECURITY_HEADERS)


async def page(request: web.Request) -> web.Response:
    return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html", charset="utf-8")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    kind = STATIC_TYPES.get(name[name.rfind("."):]) if "." in name else None
    resource = STATIC / name
    if kind is None or "/" in name or name.startswith(".") or not resource.is_file():
        raise web.HTTPNotFound(text=f"no console file {name}")
    return web.Response(body=resource.read_bytes(), content_type=kind, charset="utf-8" if kind.startswith("text") else None)


def _worker(request: web.Request) -> StreamWorker:
    worker = request.app[api.CONTROL].pipeline.workers.get(request.match_info["name"])
    if worker is None:
        raise web.HTTPNotFound(text=f"no stream named {request.match_info['name']}")
    return worker


def _analysed_fps(rates: dict[str, list[float]], worker: StreamWorker) -> float | None:
    """Frames analysed per second over the last second or more (None on the first ask)."""
    now, count = time.monotonic(), worker.frames_analysed
    entry = rates.get(worker.stream.name)
    if entry is None or count < entry[1]:
        rates[worker.stream.name] = [now, count, -1.0]
        return None
    if now - entry[0] >= 1.0:
        entry[2] = (count - entry[1]) / (now - entry[0])
        entry[0], entry[1] = now, count
    return None if entry[2] < 0 else round(entry[2], 2)


async def streams(request: web.Request) -> web.Response:
    hub, rates = request.app[HUB], request.app[RATES]
    workers = request.app[api.CONTROL].pipeline.workers
    for gone in set(rates) - set(workers):
        del rates[gone]
    hub.forget_gone(set(workers))
    now = time.time()
    out: list[dict[str, Any]] = []
    for worker in workers.values():
        scores = worker.scorer.scores(now)
        out.append({
            **worker.status(),
            "analysed_fps": _analysed_fps(rates, worker),
            "latency_s": None if worker.stream.name not in hub.latency else round(hub.latency[worker.stream.name], 3),
            "threshold": worker.scorer.threshold,
            "faces": [{"track": i.track, "score": round(i.score, 4), "alert_id": i.alert_id} for i in scores.identities],
        })
    return web.json_response({"streams": out, "watched": request.app[SNAPSHOTS].watched})


async def snapshot(request: web.Request) -> web.Response:
    picture = await request.app[SNAPSHOTS].picture(_worker(request))
    if picture is None:
        return web.Response(status=204)
    headers = {"X-Streamguard-Faces": str(picture.faces), "X-Streamguard-Frame-Age": f"{time.time() - picture.frame_ts:.3f}"}
    return web.Response(body=picture.jpeg, content_type="image/jpeg", headers=headers)


async def history(request: web.Request) -> web.Response:
    worker = _worker(request)
    chart = request.app[HUB].chart(worker.stream.name)
    chart["threshold"] = worker.scorer.threshold
    return web.json_response(chart)


async def face(request: web.Request) -> web.Response:
    jpeg = request.app[HUB].faces.get(request.match_info["id"])
    if jpeg is None:
        raise web.HTTPNotFound(text="no face kept for that alert (thumbnails off, or it is older than console.recent_alerts)")
    return web.Response(body=jpeg, content_type="image/jpeg")


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def feed(request: web.Request) -> web.StreamResponse:
    """Server-sent events: first `backlog` (the alerts kept), then each event as it is published."""
    hub = request.app[HUB]
    try:
        viewer = hub.feed.join()  # before the backlog is taken: nothing falls between the two
    except FeedFull as err:
        raise web.HTTPServiceUnavailable(text=str(err)) from None
    try:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(_sse("backlog", hub.recent()))
        while not hub.feed.closed:
            item = await viewer.get(KEEPALIVE_S)
            if item is None:
                await response.write(b": keep-alive\n\n")
            else:
                await response.write(_sse(item["kind"], item))
        return response
    except ConnectionResetError:  # the page went away (closed, reloaded): nothing to answer
        return response
    finally:
        hub.feed.leave(viewer)

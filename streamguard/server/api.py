"""The control API: health, Prometheus metrics, and the streams (list, add, remove).

    GET    /healthz          {"status": "ok", "streams": N, "live": K}     (no token)
    GET    /metrics          Prometheus text format                         (no token unless http.metrics_token)
    GET    /openapi.json     this API described as OpenAPI 3.1               (no token)
    GET    /streams          {"streams": [status, ...]}
    GET    /streams/{name}   status
    POST   /streams          {"name": "cam1", "url": "rtsp://...", "ingest": {...}} -> 201 status;
                             403 (400: a URL it cannot check) if the source policy refuses the URL;
                             503 with Retry-After beyond http.max_streams
    DELETE /streams/{name}   -> 200 the stream's final counts

A status is `StreamWorker.status()`: state, detail, fps, resolution, last frame age,
reconnects, frame counts, active tracks, and the URL with credentials redacted.
The optional `ingest` object overrides `ingest.*` settings for that stream only
(e.g. `{"analysis_fps": 2, "rtsp_transport": "udp"}`), except `queue_size`; the optional
`scoring` object overrides `scoring.*` and is checked like the config file (400 naming the field).
"""

from __future__ import annotations

import dataclasses
import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from streamguard import metrics
from streamguard.config import IngestConfig, StreamConfig
from streamguard.ingest.hwaccel import gpu_decoding_problem
from streamguard.ingest.policy import SourceRefused
from streamguard.server.control import Busy, Control, StreamConflict, UnknownStream

CONTROL = web.AppKey("control", Control)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/streams", list_streams)
    app.router.add_post("/streams", add_stream)
    app.router.add_get("/streams/{name}", get_stream)
    app.router.add_delete("/streams/{name}", delete_stream)


async def healthz(request: web.Request) -> web.Response:
    workers = request.app[CONTROL].pipeline.workers.values()
    live = sum(1 for w in workers if w.source.state == "live")
    return web.json_response({"status": "ok", "streams": len(workers), "live": live})


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def list_streams(request: web.Request) -> web.Response:
    workers = request.app[CONTROL].pipeline.workers.values()
    return web.json_response({"streams": [w.status() for w in workers]})


async def get_stream(request: web.Request) -> web.Response:
    try:
        worker = request.app[CONTROL].worker(request.match_info["name"])
    except UnknownStream as err:
        raise web.HTTPNotFound(text=str(err)) from None
    return web.json_response(worker.status())


async def add_stream(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text='send JSON (Content-Type: application/json): {"name": ..., "url": ...}')
    try:
        data = json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text='the body is not JSON; send {"name": ..., "url": ...}') from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text='send a JSON object: {"name": ..., "url": ...}')
    control = request.app[CONTROL]
    overrides = data.pop("ingest", {})
    try:
        stream = StreamConfig.model_validate(data)
    except ValidationError as err:
        raise web.HTTPBadRequest(text=_invalid(err)) from None
    if not isinstance(overrides, dict) or "queue_size" in overrides:
        raise web.HTTPBadRequest(text="'ingest' must be an object of ingest settings other than queue_size")
    try:
        ingest = IngestConfig.model_validate({**control.cfg.ingest.model_dump(), **overrides})
    except ValidationError as err:
        raise web.HTTPBadRequest(text=_invalid(err, "ingest.")) from None
    if (problem := gpu_decoding_problem(ingest)) is not None:
        raise web.HTTPBadRequest(text=problem)
    try:
        control.cfg.scoring_for(stream)  # the pipeline builds it when the stream starts: refuse a bad one here
    except ValidationError as err:
        raise web.HTTPBadRequest(text=_invalid(err, "scoring.")) from None
    try:
        worker = await control.add(stream, ingest)
    except StreamConflict as err:
        raise web.HTTPConflict(text=str(err)) from None
    except Busy as err:
        raise busy(err) from None
    except SourceRefused as err:  # nothing was opened; the message names the rule
        raise (web.HTTPBadRequest if err.status == 400 else web.HTTPForbidden)(text=str(err)) from None
    return web.json_response(worker.status(), status=201, headers={"Location": f"/streams/{stream.name}"})


async def delete_stream(request: web.Request) -> web.Response:
    try:
        report = await request.app[CONTROL].remove(request.match_info["name"])
    except UnknownStream as err:
        raise web.HTTPNotFound(text=str(err)) from None
    return web.json_response({"removed": dataclasses.asdict(report)})


def busy(err: Busy) -> web.HTTPServiceUnavailable:
    """A limit reached: 503 with Retry-After, so a client knows when to try again."""
    return web.HTTPServiceUnavailable(text=str(err), headers={"Retry-After": str(err.retry_after)})


def _invalid(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    field = prefix + ".".join(str(p) for p in first["loc"]) or "(body)"
    message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
    return f"invalid value for '{field}': {message}"

"""One HTTP front door for `run --processes N`: every worker's control API, WHIP and /metrics on one port.

Why: whoever adds cameras, publishes over WHIP or scrapes /metrics should see one
streamguard, not N ports and a rule for which stream lives where. Workers listen on
loopback ports the OS picks (each writes its URL to its ready file, supervisor.py); the
front door sends a request about a stream to the worker that holds it, a new stream to
the worker with the fewest, and merges GET /streams, /healthz and /metrics (each
worker's series labelled `worker="i"`). When a worker is restarted, the front door makes
the API's changes again: it removes the config's streams the API had removed from that
worker and adds back those the API had added (for a moment after the restart a removed
stream runs again). A WHIP publisher has to publish again: its peer connection died with
the worker, as after any restart.

Auth: the front door checks the token itself, so a request without it never reaches a
worker; workers have the same token, so their loopback ports are no side door, and the
front door sends it on every request it makes to them. The Host check, CORS, the
per-client rate limit and TLS are the front door's too (middleware.py, exposure.py):
it is what clients reach. Workers serve plain HTTP on loopback without a rate limit
(every request they see comes from the front door); each enforces its own
`http.max_streams` and `http.max_whip_pending`, and their 503s (with Retry-After)
pass through.

On a Ray cluster (cluster/driver.py) the workers are shards and a `Placement` (the
director) decides: POST /streams, DELETE /streams/{name} and WHIP claims go through it
(it records each stream's owner and epoch), everything else is as above, with each
shard's series and statuses labelled with its shard and node too, and /healthz
degraded while a stream has no live owner (its shard died and it is being moved).

    GET    /healthz                   {"status": "ok" | "degraded", "streams", "live", "workers": [...]}; 503 if a worker is down
    GET    /metrics                   all workers' series (label worker), plus streamguard_worker_up / _starts
    GET    /openapi.json              the API's description (server/openapi.py)
    GET    /streams                   every worker's streams, each status with its "worker"
    POST   /streams                   to the worker with the fewest streams; 409 if any worker has the name
    GET    /streams/{name}            }
    DELETE /streams/{name}            } to the worker that holds the stream; 404 if none does
    DELETE /whip/{stream}/{session}   }
    POST   /whip/{stream}             to the worker that holds the name (a publisher replacing another), else the one with the fewest
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from streamguard.config import HttpConfig, parse_bind
from streamguard.errors import ConfigError
from streamguard.server import openapi
from streamguard.server.console_front import ConsoleFront
from streamguard.server.exposure import check_exposure, ssl_context
from streamguard.server.middleware import middlewares
from streamguard.server.placement import Placement

log = logging.getLogger(__name__)

WORKER_TIMEOUT_S = 30.0  # a WHIP answer waits for ICE gathering; everything else answers in milliseconds
SHUTDOWN_TIMEOUT_S = 5.0
PASSED_ON = ("Content-Type", "Location", "ETag", "WWW-Authenticate", "Retry-After")  # response headers a client may need


@dataclass
class WorkerLink:
    """What the front door knows of one worker: where it listens while up, and what the API added to it."""

    index: int
    url: str | None = None  # None while the worker is starting, restarting or gone
    added: dict[str, bytes] = field(default_factory=dict)  # stream name -> the POST /streams body that added it
    removed: set[str] = field(default_factory=set)  # removed through the API: a restart would bring those from the config back
    labels: dict[str, str] = field(default_factory=dict)  # added to its metrics and stream statuses (a cluster: shard, node)


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def stream_name(request: web.Request) -> str:
    """The stream a request is about: /streams/{name} or /whip/{stream}/..."""
    return request.match_info.get("name") or request.match_info["stream"]


class WorkerError(Exception):
    """A worker did not answer (it died between its ready file and our request, or hung)."""


def merge_metrics(texts: dict[int, str], labels: dict[int, dict[str, str]] | None = None) -> list[Metric]:
    """Prometheus text from each worker -> one family per metric name, every sample labelled with its worker
    (and the worker's own `labels`: a shard's name and node)."""
    families: dict[str, Metric] = {}
    for index, text in sorted(texts.items()):
        extra = {**(labels or {}).get(index, {}), "worker": str(index)}
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            merged.samples.extend(s._replace(labels={**s.labels, **extra}) for s in family.samples)
    return list(families.values())


class _Families:
    """A collector that yields families already collected (generate_latest renders collectors)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class FrontDoor:
    """Serves `cfg.bind` for `count` workers; `start` and `close` bracket its life, the supervisor
    calls `worker_up` / `worker_down` as workers come and go."""

    def __init__(self, cfg: HttpConfig, count: int, placement: Placement | None = None) -> None:
        if cfg.bind is None:
            raise ConfigError("http.bind is not set: nothing to serve on")
        check_exposure(cfg)  # before anything binds
        self.cfg = cfg
        self.placement = placement  # None: workers are the truth (run --processes); else adds and removes go through it
        self.workers = [WorkerLink(i) for i in range(count)]
        self._lock = asyncio.Lock()  # adds and removes one at a time: two requests cannot race for a name
        self._auth = {"Authorization": f"Bearer {cfg.token}"} if cfg.token else {}
        self._http: aiohttp.ClientSession | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self._up = Gauge("streamguard_worker_up", "1 while the worker process serves", ["worker"], registry=self.registry)
        self._starts = Counter("streamguard_worker_starts", "Times the worker process got ready", ["worker"], registry=self.registry)
        for link in self.workers:
            self._up.labels(str(link.index)).set(0)
        self._runner = web.AppRunner(self._build_app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        self.port: int | None = None

    @property
    def url(self) -> str:
        host, _ = parse_bind(self.cfg.bind or "")
        scheme = "https" if self.cfg.tls_cert else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> None:
        """Listen; ConfigError with one line if the address cannot be used."""
        host, port = parse_bind(self.cfg.bind or "")
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WORKER_TIMEOUT_S))
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port, ssl_context=ssl_context(self.cfg)).start()
        except OSError as err:
            await self.close()
            raise ConfigError(f"http.bind: cannot listen on {self.cfg.bind}: {err.strerror}") from None
        self.port = self._runner.addresses[0][1]
        auth = "token required" if self.cfg.token else "no token: anyone who can reach it controls streamguard"
        log.info("HTTP API for %d workers on %s (%s); WHIP: POST %s/whip/<stream>", len(self.workers), self.url, auth, self.url)

    async def close(self) -> None:
        await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def worker_up(self, index: int, url: str, labels: dict[str, str] | None = None) -> None:
        """Worker `index` serves at `url`; after a restart, add back the streams the API had added to it."""
        link = self.workers[index]
        link.url = url
        link.labels = labels or {}
        self._up.labels(str(index)).set(1)
        self._starts.labels(str(index)).inc()
        async with self._lock:
            for name in sorted(link.removed):
                await self._replay(link, "DELETE", f"/streams/{quote(name)}", None, {200, 404}, f"removing stream {name} again")
            for name, body in list(link.added.items()):
                await self._replay(link, "POST", "/streams", body, {201}, f"adding stream {name} (added through the API) back")

    async def _replay(self, link: WorkerLink, method: str, path: str, body: bytes | None, ok: set[int], what: str) -> None:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            status, _, text = await self._call(link, method, path, body, headers)
        except WorkerError as err:
            log.error("worker %d: %s failed: %s", link.index, what, err)
            return
        if status in ok:
            log.info("worker %d: %s", link.index, what)
        else:
            log.error("worker %d: %s was refused (%d): %s", link.index, what, status, text[:200].decode(errors="replace"))

    def worker_down(self, index: int) -> None:
        self.workers[index].url = None
        self._up.labels(str(index)).set(0)

    # --- talking to workers

    async def _call(self, link: WorkerLink, method: str, path: str, body: bytes | None = None,
                    headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request to a worker: (status, the headers we pass on, body); WorkerError if it cannot answer."""
        if link.url is None or self._http is None:
            raise WorkerError(f"worker {link.index} is not running")
        try:
            async with self._http.request(method, link.url + path, data=body, headers={**(headers or {}), **self._auth}) as resp:
                kept = {k: resp.headers[k] for k in PASSED_ON if k in resp.headers}
                return resp.status, kept, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as err:
            raise WorkerError(f"worker {link.index} did not answer {method} {path}: {err or type(err).__name__}") from None

    async def _each(self, path: str) -> dict[int, bytes]:
        """GET `path` from every running worker at once: the bodies of those that answered 200."""
        up = [link for link in self.workers if link.url is not None]
        answers = await asyncio.gather(*(self._call(link, "GET", path) for link in up), return_exceptions=True)
        found: dict[int, bytes] = {}
        for link, answer in zip(up, answers, strict=True):
            if isinstance(answer, WorkerError):
                log.warning("%s", answer)
            elif isinstance(answer, BaseException):
                raise answer
            elif answer[0] == 200:
                found[link.index] = answer[2]
        return found

    async def _holdings(self) -> dict[int, set[str]]:
        """The names of the streams each running worker holds (asked, not remembered: workers are the truth)."""
        return {i: {status["name"] for status in json.loads(body)["streams"]} for i, body in (await self._each("/streams")).items()}

    def _owner(self, holdings: dict[int, set[str]], name: str) -> WorkerLink | None:
        """The running worker that has a stream called `name`."""
        return next((self.workers[i] for i in sorted(holdings) if name in holdings[i]), None)

    def _least_loaded(self, holdings: dict[int, set[str]]) -> WorkerLink:
        if not holdings:
            raise web.HTTPServiceUnavailable(text="no worker is running (they are starting or restarting); try again shortly")
        return self.workers[min(holdings, key=lambda i: (len(holdings[i]), i))]

    async def _forward(self, request: web.Request, link: WorkerLink | None) -> web.Response:
        """Send the client's request to `link` as it came (404 if no worker holds the stream) and its answer back."""
        if link is None:
            name = stream_name(request)
            again = f" (a WHIP session whose worker is gone: publish again with POST /whip/{name})" if "stream" in request.match_info else ""
            raise web.HTTPNotFound(text=f"no stream named {name}{again}")
        headers = {k: request.headers[k] for k in ("Content-Type", "If-Match") if k in request.headers}
        body = await request.read() if request.body_exists else None  # read() is cached: the handler may have read it
        try:
            status, kept, answer = await self._call(link, request.method, request.raw_path, body, headers)
        except WorkerError as err:
            raise web.HTTPBadGateway(text=str(err)) from None
        return web.Response(status=status, body=answer, headers=kept)

    # --- the routes

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=middlewares(self.cfg), client_max_size=self.cfg.max_body_bytes)
        openapi.add_routes(app)
        ConsoleFront(self).add_routes(app)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/streams", self.list_streams)
        app.router.add_post("/streams", self.add_stream)
        app.router.add_get("/streams/{name}", self.to_owner)
        app.router.add_delete("/streams/{name}", self.delete_stream)
        app.router.add_post("/whip/{stream}", self.publish)
        app.router.add_delete("/whip/{stream}/{session}", self.end_whip)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        answers = {i: json.loads(body) for i, body in (await self._each("/healthz")).items()}
        workers = [{"worker": link.index, "up": link.index in answers, "streams": answers.get(link.index, {}).get("streams", 0),
                    "live": answers.get(link.index, {}).get("live", 0)} for link in self.workers]
        unowned = await self.placement.unowned() if self.placement is not None else []
        ok = all(w["up"] for w in workers) and not unowned
        body = {"status": "ok" if ok else "degraded", "streams": sum(w["streams"] for w in workers),
                "live": sum(w["live"] for w in workers), "workers": workers,
                **({"unowned": unowned} if self.placement is not None else {})}
        return web.json_response(body, status=200 if ok else 503)

    async def prometheus(self, request: web.Request) -> web.Response:
        texts = {i: body.decode() for i, body in (await self._each("/metrics")).items()}
        merged = CollectorRegistry(auto_describe=False)
        labels = {link.index: link.labels for link in self.workers}
        merged.register(_Families(merge_metrics(texts, labels)))  # type: ignore[arg-type]
        body = generate_latest(self.registry) + generate_latest(merged)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def list_streams(self, request: web.Request) -> web.Response:
        statuses = [{**status, **self.workers[i].labels, "worker": i} for i, body in (await self._each("/streams")).items()
                    for status in json.loads(body)["streams"]]
        return web.json_response({"streams": statuses})

    async def to_owner(self, request: web.Request) -> web.Response:
        return await self._forward(request, self._owner(await self._holdings(), stream_name(request)))

    async def end_whip(self, request: web.Request) -> web.Response:
        response = await self.to_owner(request)
        if self.placement is not None and response.status == 200:  # the claim ends with the session
            await self.placement.remove(request.match_info["stream"])
        return response

    async def add_stream(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            name = json.loads(body).get("name")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            name = None  # not an object with a name: any worker's validation says what is wrong
        if self.placement is not None and isinstance(name, str):
            # The source policy (ingest/policy.py) is applied by the shard's own API, which the director's adopt
            # POSTs the body to, as each worker's API applies it behind the --processes front door.
            async with self._lock:
                status, text = await self.placement.add(name, body)
            return _answer(status, text, {"Location": f"/streams/{quote(name)}"} if status == 201 else {})
        async with self._lock:
            holdings = await self._holdings()
            if isinstance(name, str):
                owner = self._owner(holdings, name) or next((link for link in self.workers if name in link.added), None)
                if owner is not None:  # the second: a worker that is down holds it and will add it back
                    raise web.HTTPConflict(text=f"stream {name} already exists (in worker {owner.index})")
            link = self._least_loaded(holdings)
            response = await self._forward(request, link)
            if response.status == 201 and isinstance(name, str):
                link.added[name] = body  # a worker restarted adds it back (after removing the config's one: `removed`)
            return response

    async def delete_stream(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.placement is not None:
            async with self._lock:
                return _answer(*await self.placement.remove(name))
        async with self._lock:
            link = self._owner(await self._holdings(), name)
            response = await self._forward(request, link)
            if link is not None and response.status == 200 and link.added.pop(name, None) is None:
                link.removed.add(name)  # from the config: a restart would start it again
            return response

    async def publish(self, request: web.Request) -> web.Response:
        async with self._lock:
            holdings = await self._holdings()
            link = self._owner(holdings, request.match_info["stream"]) or self._least_loaded(holdings)
            if self.placement is not None:  # recorded with an owner and an epoch before the publisher's events flow
                status, text = await self.placement.claim(request.match_info["stream"], link.index)
                if status != 200:
                    return _answer(status, text)
            return await self._forward(request, link)


def _answer(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    """A placement's answer as a response: its JSON (a stream's status, a shard's error) as is, else {"error": text}."""
    if not text.startswith(("{", "[")):
        text = json.dumps({"error": text} if status >= 400 else {"detail": text})
    return web.Response(status=status, text=text, content_type="application/json", headers=headers)

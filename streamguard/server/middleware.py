"""What every request goes through: the Host check, CORS, the rate limit, JSON errors, bearer-token auth.

Order (outermost first): the Host check refuses a request for a name that is not
ours (DNS rebinding, exposure.py) before anything else sees it; the rate limit
answers 429 before any work is done, preflights included (so a 429 carries no CORS
headers: a page sees a network error, and retries later like any client); CORS
answers browser preflights itself (they carry no credentials) and adds its headers
to every response on the WebRTC routes, errors included, so a page can read why it
was refused, and refuses a control-route request from a foreign page; errors turns
any exception into `{"error": "..."}` with a 4xx/5xx status; auth refuses a missing
or wrong token with 401.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from streamguard.config import HttpConfig
from streamguard.server.exposure import host_names, host_of
from streamguard.server.ratelimit import TokenBuckets

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/"})  # no token needed: probes, the API's description, the console page
CONSOLE_ASSETS = "/console/static/"  # the console page's own files: no data in them (server/console.py)
WEBRTC_PREFIX = "/whip/"  # the routes a browser page may call cross-origin (when its origin is listed)
CORS_EXPOSE = "Location, ETag, Link, Accept-Patch"  # WHIP clients read Location from the 201
CORS_PREFLIGHT = {
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Max-Age": "86400",
}


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def middlewares(cfg: HttpConfig) -> list[Middleware]:
    """The server's middlewares for `cfg`, in the order the module docstring explains."""
    chain: list[Middleware] = [host_check(cfg)]
    if cfg.rate_per_client > 0:
        chain.append(rate_limit(TokenBuckets(cfg.rate_per_client, cfg.rate_burst)))
    chain += [cors(cfg.cors_origins), errors]
    if cfg.token:
        chain.append(bearer_auth(cfg.token, PUBLIC_PATHS if cfg.metrics_token else PUBLIC_PATHS | {"/metrics"}))
    return chain


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes a JSON body; nothing a client sends can crash the server."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return json_error(exc.status, exc.text or exc.reason, kept)
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        return json_error(500, "internal error (logged by the server)")


def host_check(cfg: HttpConfig) -> Middleware:
    """Answer 421 to a Host that is not the bound address or a configured name (exposure.host_names)."""
    names, any_ip = host_names(cfg)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Host")
        if header is not None:  # HTTP/1.0 may omit it; no browser does
            host = host_of(header)
            try:
                ip: str | None = str(ipaddress.ip_address(host))
            except ValueError:
                ip = None
            if not ((ip or host) in names or (any_ip and ip is not None)):
                return json_error(421, f"this server does not answer for host {host!r} (add it to http.hosts)")
        return await handler(request)

    return middleware


def cors(origins: list[str]) -> Middleware:
    """CORS on the WebRTC routes for the listed origins ('*': any), so a browser page can publish over WHIP;
    a control-route request from another origin (a page the user happens to visit) gets 403."""
    any_origin = "*" in origins

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        if not request.path.startswith(WEBRTC_PREFIX):
            if origin != f"{request.scheme}://{request.host}":
                return json_error(403, "the control API is not served to other origins' pages")
            return await handler(request)
        allowed = any_origin or origin in origins
        if allowed and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204, headers=CORS_PREFLIGHT)
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
        response.headers["Vary"] = "Origin"
        return response

    return middleware


def rate_limit(buckets: TokenBuckets) -> Middleware:
    """429 with Retry-After once a client IP has spent its burst faster than the rate refills it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        wait = buckets.take(request.remote or "")
        if wait > 0:
            return json_error(429, "too many requests from this address; slow down", {"Retry-After": buckets.retry_after(wait)})
        return await handler(request)

    return middleware


def bearer_auth(token: str, public: frozenset[str] = PUBLIC_PATHS) -> Middleware:
    """Require `Authorization: Bearer <token>` everywhere but `public` paths, the console's assets and preflights."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" and request.path not in public and not request.path.startswith(CONSOLE_ASSETS):
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                raise web.HTTPUnauthorized(
                    text="missing or wrong bearer token", headers={"WWW-Authenticate": 'Bearer realm="streamguard"'}
                )
        return await handler(request)

    return auth

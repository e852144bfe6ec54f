"""What every request goes through: CORS, JSON errors, bearer-token auth.

Order (outermost first): CORS answers browser preflights itself (they carry no
credentials) and adds its headers to every response, errors included, so a page
can read why it was refused; errors turns any exception into `{"error": "..."}`
with a 4xx/5xx status; auth refuses a missing or wrong token with 401.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/healthz", "/metrics"})  # no token needed: probes and scrapers
CORS_EXPOSE = "Location, ETag, Link, Accept-Patch"  # WHIP clients read Location from the 201
CORS_PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Max-Age": "86400",
}


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


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


def bearer_auth(token: str) -> Middleware:
    """Require `Authorization: Bearer <token>` everywhere but OPEN_PATHS and preflights."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" and request.path not in OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                raise web.HTTPUnauthorized(
                    text="missing or wrong bearer token", headers={"WWW-Authenticate": 'Bearer realm="streamguard"'}
                )
        return await handler(request)

    return auth


def cors(origins: list[str]) -> Middleware:
    """CORS for the listed origins ('*': any), so a browser page can publish over WHIP."""
    any_origin = "*" in origins

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and (any_origin or origin in origins)
        if allowed and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204, headers=CORS_PREFLIGHT)
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE
            if not any_origin:
                response.headers["Vary"] = "Origin"
        return response

    return middleware

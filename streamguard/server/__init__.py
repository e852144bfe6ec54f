"""The HTTP server: control API, WHIP ingest, /metrics and /healthz (aiohttp)."""

from streamguard.server.app import HttpServer, build_app

__all__ = ["HttpServer", "build_app"]

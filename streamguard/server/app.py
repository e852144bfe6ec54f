"""The aiohttp application and the server's life (start listening, stop, end WHIP sessions)."""

from __future__ import annotations

import logging

from aiohttp import web

from streamguard.config import Config, HttpConfig, parse_bind
from streamguard.errors import ConfigError
from streamguard.pipeline import Pipeline
from streamguard.console import ConsoleHub
from streamguard.server import api, console, openapi, whip
from streamguard.server.control import Control
from streamguard.server.exposure import check_exposure, ssl_context
from streamguard.server.middleware import middlewares

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 5.0  # requests still running at shutdown get this long


def build_app(cfg: HttpConfig, control: Control, hub: ConsoleHub | None = None) -> web.Application:
    """Routes and middlewares (middleware.py); bodies over `cfg.max_body_bytes` get 413."""
    app = web.Application(middlewares=middlewares(cfg), client_max_size=cfg.max_body_bytes)
    app[api.CONTROL] = control
    api.add_routes(app)
    whip.add_routes(app)
    openapi.add_routes(app)
    console.add_routes(app, hub)
    return app


class HttpServer:
    """Serves `cfg.http.bind` for a pipeline; `start` and `close` bracket its life."""

    def __init__(self, cfg: Config, pipeline: Pipeline, console: ConsoleHub | None = None) -> None:
        if cfg.http.bind is None:
            raise ConfigError("http.bind is not set: nothing to serve on")
        check_exposure(cfg.http)  # before anything binds
        self.cfg = cfg
        self.control = Control(pipeline, cfg)
        self._runner = web.AppRunner(build_app(cfg.http, self.control, console), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        self.port: int | None = None

    @property
    def url(self) -> str:
        host, _ = parse_bind(self.cfg.http.bind or "")
        scheme = "https" if self.cfg.http.tls_cert else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> None:
        """Listen; ConfigError with one line if the address cannot be used."""
        host, port = parse_bind(self.cfg.http.bind or "")
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port, ssl_context=ssl_context(self.cfg.http)).start()
        except OSError as err:
            await self._runner.cleanup()
            await self.control.close()
            raise ConfigError(f"http.bind: cannot listen on {self.cfg.http.bind}: {err.strerror}") from None
        self.port = self._runner.addresses[0][1]
        auth = "token required" if self.cfg.http.token else "no token: anyone who can reach it controls streamguard"
        log.info("HTTP API on %s (%s); WHIP: POST %s/whip/<stream>; console: %s/", self.url, auth, self.url, self.url)

    async def close(self) -> None:
        """Stop serving (requests in flight finish), then end the WHIP streams and their sessions."""
        await self._runner.cleanup()
        await self.control.close()

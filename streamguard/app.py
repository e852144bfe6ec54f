"""The composition root: one place that opens what a running streamguard is made of,
and closes it in reverse.

`run`, `demo`, `analyze`, the benchmarks and the tests' harness all run the same
stack (engine -> sink -> pipeline -> HTTP server) with different sinks and options;
each used to wire it by hand, with its own order and its own clean-up. Here the order
is written once: the engine is opened first, so a bad checkpoint fails before anything
else starts; on the way out the server stops taking requests before the pipeline ends
its streams (which publishes their final events), and the sink flushes those events
before it closes. The cluster's shard runs this too.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from streamguard.config import Config
from streamguard.connectors import start_watches
from streamguard.console import ConsoleHub
from streamguard.inference.contract import Engine
from streamguard.inference.registry import open_engine
from streamguard.ingest.hwaccel import require_decoding
from streamguard.pipeline import EventPublisher, Pipeline, SampleHook, StreamReport
from streamguard.server import HttpServer

if TYPE_CHECKING:
    from streamguard.connectors.watch import ConnectorWatch

log = logging.getLogger(__name__)

# How long closing waits for the sink to deliver what the pipeline published last.
SINK_FLUSH_S = 10.0

UNTRAINED_WARNING = (
    "no checkpoint given: the model has untrained (random) weights, so its scores mean NOTHING. "
    "Point it at a fine-tuned FSFM checkpoint or a streamguard-train export with --checkpoint PATH "
    "(or model.checkpoint in the config, or STREAMGUARD_CHECKPOINT)."
)


class EventSink(EventPublisher, Protocol):
    """An event publisher with a life: started before the first event, flushed and closed after the last."""

    async def start(self) -> None: ...

    async def close(self, timeout: float) -> None: ...


@dataclass
class App:
    """What `running` opened; `reports` is filled when the pipeline has closed."""

    cfg: Config
    engine: Engine
    sink: EventSink
    pipeline: Pipeline
    server: HttpServer | None
    reports: list[StreamReport] = field(default_factory=list)
    watches: list[ConnectorWatch] = field(default_factory=list)  # one per configured connector (cfg.connectors)


def open_model(cfg: Config) -> Engine:
    """The engine `cfg.model` names, logged (and a loud warning for untrained weights)."""
    engine = open_engine(cfg.model, img_size=cfg.crop.size)
    meta = engine.meta
    log.info("model %s (%s, digest %s)", meta.name, meta.source, meta.digest)
    if not meta.trained:
        log.warning(UNTRAINED_WARNING)
    return engine


@asynccontextmanager
async def running(
    cfg: Config,
    sink: EventSink,
    *,
    engine: Engine | None = None,
    on_sample: SampleHook | None = None,
    flush_timeout: float = SINK_FLUSH_S,
) -> AsyncIterator[App]:
    """Open the engine (unless one is given: the caller keeps it), start the sink, the pipeline
    with `cfg.streams`, the connectors (`cfg.connectors`: each adds and removes its participants'
    streams) and, when `cfg.http.bind` is set, the HTTP server; on exit close the server, the
    connectors (their streams end), the pipeline (its reports land on `App.reports`), the sink
    (flushing for up to `flush_timeout` seconds; none when leaving on an error) and the engine
    we opened."""
    require_decoding(cfg.ingest)  # cheap: before the model loads
    own_engine = engine is None
    engine = open_model(cfg) if engine is None else engine
    try:
        await sink.start()
        try:
            console = ConsoleHub(cfg.console) if cfg.http.bind and cfg.console.enabled else None  # sees every event
            pipeline = Pipeline(cfg, engine, console.tee(sink) if console else sink, on_sample=on_sample)
            server = HttpServer(cfg, pipeline, console) if cfg.http.bind else None
            app = App(cfg, engine, sink, pipeline, server)
            await pipeline.start()
            try:
                app.watches = start_watches(cfg, pipeline, sink)
                if server is not None:
                    await server.start()
                yield app
            finally:
                if server is not None:
                    await server.close()
                for watch in app.watches:
                    await watch.close()
                app.reports = await pipeline.close()
            await sink.close(timeout=flush_timeout)
        finally:
            await sink.close(timeout=0)  # after the flush above: nothing left to wait for
    finally:
        if own_engine:
            engine.close()

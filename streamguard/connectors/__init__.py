"""Connectors: join a call server and analyse every participant's video (see base.py).

`start_watches` is what the composition root calls when `connectors` is configured;
the modules (aiortc) are imported only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamguard.config import Config

if TYPE_CHECKING:
    from streamguard.connectors.watch import ConnectorWatch
    from streamguard.pipeline import EventPublisher, Pipeline


def start_watches(cfg: Config, pipeline: Pipeline, sink: EventPublisher) -> list[ConnectorWatch]:
    """One started watch per configured server (none configured: none, nothing imported)."""
    if not cfg.connectors.janus:
        return []
    from streamguard.connectors.janus import JanusVideoRoom
    from streamguard.connectors.watch import ConnectorWatch

    watches = []
    for janus in cfg.connectors.janus:
        connector = JanusVideoRoom(janus, cfg.webrtc, timeout=cfg.ingest.open_timeout_s)
        watch = ConnectorWatch(connector, pipeline, sink, cfg.ingest, janus.poll_interval_s, janus.max_participants,
                               max_streams=cfg.http.max_streams)
        watch.start()
        watches.append(watch)
    return watches

"""Ingest: live sources in, sampled RGB frames out (one source per stream)."""

from streamguard.config import IngestConfig, StreamConfig, WebRTCConfig
from streamguard.ingest.latest import LatestQueue, QueueClosed
from streamguard.ingest.pyav_source import StreamSource
from streamguard.ingest.source_base import SourceBase, SourceStats
from streamguard.ingest.urls import is_file_url, whep_endpoint
from streamguard.types import Frame


def open_source(stream: StreamConfig, cfg: IngestConfig, queue: LatestQueue[Frame], webrtc: WebRTCConfig) -> SourceBase:
    """The source for a stream's URL: a WHEP pull for `whep+http(s)://`, PyAV for anything else."""
    if whep_endpoint(stream.url) is not None:
        from streamguard.ingest.webrtc import WhepSource  # aiortc costs ~0.4 s to import: only when used

        return WhepSource(stream, cfg, queue, webrtc)
    return StreamSource(stream, cfg, queue)


__all__ = [
    "LatestQueue", "QueueClosed", "SourceBase", "SourceStats", "StreamSource",
    "is_file_url", "open_source", "whep_endpoint",
]

"""Ingest: live sources in, sampled RGB frames out (one StreamSource per stream)."""

from streamguard.ingest.latest import LatestQueue, QueueClosed
from streamguard.ingest.source import StreamSource
from streamguard.ingest.urls import is_file_url, redact_url

__all__ = ["LatestQueue", "QueueClosed", "StreamSource", "is_file_url", "redact_url"]

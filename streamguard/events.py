"""The published event: one versioned schema, one serializer.

Subscribers parse this JSON, so it changes only by adding optional fields; anything
else bumps `schema`. `EventV1.model_json_schema()` is the machine-readable contract.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from streamguard.types import StreamState

SCHEMA = "streamguard.event.v1"

SCORES_SCHEMA = "streamguard.scores.v1"

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Box = tuple[Unit, Unit, Unit, Unit]
ThresholdSource = Literal["config", "calibrated", "default"]


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Model name, e.g. fsfm-vit-base")
    digest: str = Field(description="Short sha256 of the weights")
    trained: bool = Field(description="False when running untrained weights (scores mean nothing)")


class ParticipantV1(BaseModel):
    """Who a stream is, when a connector made it from a video call's participant (absent otherwise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connector: str = Field(description="The connector that added the stream, e.g. janus")
    server: str = Field(description="The call server's URL, credentials replaced by ***")
    room: str = Field(description="The room (call) the participant is in")
    publisher_id: str = Field(description="The participant's id on the server (kept across unpublish/republish)")
    display: str | None = Field(None, description="The participant's display name, as they gave it to the call")


class EventV1(BaseModel):
    """A verdict about one face identity in one stream."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["streamguard.event.v1"] = Field(SCHEMA, alias="schema")
    type: Literal["alert", "update", "clear"]
    id: str = Field(description="Alert id, shared by an alert, its updates and its clear")
    stream: str
    track: int = Field(ge=0, description="Identity of the face within the stream")
    score: Unit = Field(description="Window score: mean P(fake) over the window")
    threshold: Unit
    window_s: float = Field(gt=0)
    samples: int = Field(ge=0, description="Samples in the window")
    ts: float = Field(description="Unix seconds when the frame behind this verdict arrived")
    pts: float = Field(description="Seconds in the stream's timeline")
    box: Box = Field(description="Face box x0, y0, x1, y1 normalised to the frame")
    model: ModelInfo
    reason: str = Field(
        description="threshold | changed | heartbeat | below_threshold | track_ended | stream_ended | shutdown; "
        "a connector's stream also: participant_left | participant_unpublished | room_destroyed"
    )
    threshold_source: ThresholdSource | None = Field(
        None, description="config (set by the user), calibrated (from the engine's metadata) or default (0.5)"
    )
    policy: str | None = Field(None, description="Window policy: mean, trimmed_mean, ema, quantile")
    window_span_s: float | None = Field(
        None, ge=0, description="Seconds from the window's oldest sample to its newest: beyond window_s when a slowly "
        "analysed stream's window stretched to hold min_samples"
    )
    thumbnails: dict[str, str] | None = Field(
        None, description="Redis keys of JPEG thumbnails (face crop, frame) stored with a TTL; alerts only"
    )
    epoch: int | None = Field(
        None, ge=1, description="Cluster mode: the stream's ownership epoch (rises at each failover); none on one host"
    )
    seq: int | None = Field(None, ge=1, description="Cluster mode: the event's number within its stream and epoch")
    participant: ParticipantV1 | None = Field(None, description="The call participant this stream is (connector streams only)")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


class IdentityScore(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    track: int
    score: Unit
    samples: int
    alert_id: str | None = Field(description="The open alert's id, if the identity is alerting")
    pts: float
    box: Box


class ScoresV1(BaseModel):
    """Live window scores of every identity of one stream (a low-rate channel for dashboards)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["streamguard.scores.v1"] = Field(SCORES_SCHEMA, alias="schema")
    type: Literal["scores"] = "scores"
    stream: str
    ts: float
    threshold: Unit
    identities: list[IdentityScore]

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


class StreamEventV1(BaseModel):
    """A stream's ingest state changed (same channel and Stream as alerts, `type: "stream"`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["streamguard.event.v1"] = Field(SCHEMA, alias="schema")
    type: Literal["stream"] = "stream"
    stream: str
    state: StreamState = Field(description="connecting | live | stalled | reconnecting | ended | failed")
    detail: str = Field(description="Why, in one line: the resolution when live, the error when reconnecting or failed")
    ts: float = Field(description="Unix seconds of the change")
    url: str = Field(description="The source URL with credentials replaced by ***")
    epoch: int | None = Field(None, ge=1, description="Cluster mode: the stream's ownership epoch")
    seq: int | None = Field(None, ge=1, description="Cluster mode: the event's number within its stream and epoch")
    participant: ParticipantV1 | None = Field(None, description="The call participant this stream is (connector streams only)")
    connector: str | None = Field(
        None, description="Set on a connector's own state (its server reachable or not): `stream` then names the connector"
    )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


AnyEventV1 = Annotated[EventV1 | StreamEventV1, Field(discriminator="type")]
_ANY_EVENT: TypeAdapter[EventV1 | StreamEventV1] = TypeAdapter(AnyEventV1)


def parse_event(data: str | bytes) -> EventV1:
    """Parse and validate an event JSON (raises pydantic.ValidationError)."""
    return EventV1.model_validate_json(data)


def parse_any_event(data: str | bytes) -> EventV1 | StreamEventV1:
    """Parse any entry of the event channel/Stream: a face verdict or a stream state change."""
    return _ANY_EVENT.validate_json(data)

"""The published event: one versioned schema, one serializer.

Subscribers parse this JSON, so it changes only by adding optional fields; anything
else bumps `schema`. `EventV1.model_json_schema()` is the machine-readable contract.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA = "streamguard.event.v1"

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Model name, e.g. fsfm-vit-base")
    digest: str = Field(description="Short sha256 of the weights")
    trained: bool = Field(description="False when running untrained weights (scores mean nothing)")


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
    box: tuple[Unit, Unit, Unit, Unit] = Field(description="Face box x0, y0, x1, y1 normalised to the frame")
    model: ModelInfo
    reason: str = Field(description="threshold | changed | below_threshold | track_ended | stream_ended | shutdown")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def parse_event(data: str | bytes) -> EventV1:
    """Parse and validate an event JSON (raises pydantic.ValidationError)."""
    return EventV1.model_validate_json(data)

"""GET /openapi.json: the HTTP API described as an OpenAPI 3.1 document.

Why: users generate clients and read the routes from it, and the tests fuzz a live
server from it (tests/e2e/test_http_fuzz.py), so the description and the server cannot
drift apart without a test failing. Hand-written: the handlers read raw JSON (their
error messages name the field), so there is no model to generate it from; the bodies
refer to the config's pydantic models where they are those models.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from streamguard import __version__
from streamguard.config import STREAM_NAME, IngestConfig, ScoringConfig

ERROR = {"$ref": "#/components/schemas/Error"}
JSON_ERROR = {"content": {"application/json": {"schema": ERROR}}}
NAME = {"type": "string", "pattern": STREAM_NAME.pattern}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, **JSON_ERROR}


COMMON = {
    "401": _error("missing or wrong bearer token (when http.token is set)"),
    "403": _error("a page of another origin (control routes are not served cross-origin)"),
    "421": _error("the Host header names a host this server does not answer for"),
    "429": _error("too many requests from this client address; see Retry-After"),
}


def _ingest_overrides() -> dict[str, Any]:
    schema = IngestConfig.model_json_schema()
    schema["properties"].pop("queue_size")
    return {"type": "object", "additionalProperties": False, "properties": schema["properties"],
            "description": "Overrides of ingest.* for this stream (all but queue_size)"}


def _scoring_overrides() -> dict[str, Any]:
    schema = ScoringConfig.model_json_schema()
    return {"type": "object", "additionalProperties": False, "properties": schema["properties"],
            "description": "Overrides of scoring.* for this stream"}


def document() -> dict[str, Any]:
    """The OpenAPI document (a plain dict, JSON-ready)."""
    stream_path = {"name": "name", "in": "path", "required": True, "schema": NAME}
    return {
        "openapi": "3.1.0",
        "info": {"title": "streamguard", "version": __version__,
                 "description": "Control API, WHIP ingest, health and metrics of a streamguard server (docs/security.md)."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "NewStream": {
                    "type": "object", "required": ["name", "url"], "additionalProperties": False,
                    "properties": {
                        "name": NAME,
                        "url": {"type": "string", "minLength": 1, "description": "Any URL FFmpeg opens"},
                        "ingest": _ingest_overrides(),
                        "scoring": _scoring_overrides(),
                    },
                },
                "StreamStatus": {"type": "object", "required": ["name", "state"], "properties": {
                    "name": {"type": "string"}, "state": {"type": "string"}, "url": {"type": "string"},
                }},
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {
                "200": {"description": "serving", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status", "streams", "live"]}}}},
                "503": _error("degraded: a worker is down (front door)"),
            }}},
            "/metrics": {"get": {"summary": "Prometheus metrics (token only with http.metrics_token)", "responses": {
                "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **COMMON,
            }}},
            "/openapi.json": {"get": {"summary": "This document", "security": [], "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/streams": {
                "get": {"summary": "Every stream's status", "responses": {
                    "200": {"description": "statuses", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"streams": {"type": "array", "items": {"$ref": "#/components/schemas/StreamStatus"}}}}}}},
                    **COMMON}},
                "post": {"summary": "Add a stream", "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/NewStream"}}}}, "responses": {
                    "201": {"description": "added; Location names it", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/StreamStatus"}}}},
                    "400": _error("not JSON, or a field is invalid (named in the error)"),
                    "409": _error("the name is taken"),
                    "413": _error("body over http.max_body_bytes"),
                    "415": _error("not application/json"),
                    "503": _error("http.max_streams reached; see Retry-After"),
                    **COMMON}},
            },
            "/streams/{name}": {
                "parameters": [stream_path],
                "get": {"summary": "One stream's status", "responses": {
                    "200": {"description": "status", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StreamStatus"}}}},
                    "404": _error("no such stream"), **COMMON}},
                "delete": {"summary": "Stop and remove a stream", "responses": {
                    "200": {"description": "its final counts", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["removed"]}}}},
                    "404": _error("no such stream"), **COMMON}},
            },
            "/whip/{stream}": {
                "parameters": [{"name": "stream", "in": "path", "required": True, "schema": NAME}],
                "post": {"summary": "Publish video over WHIP (RFC 9725)", "requestBody": {"required": True, "content": {
                    "application/sdp": {"schema": {"type": "string"}}}}, "responses": {
                    "201": {"description": "SDP answer; Location is the session", "content": {"application/sdp": {"schema": {"type": "string"}}}},
                    "400": _error("a bad stream name, or an SDP offer that cannot give video"),
                    "409": _error("the name is used by a non-WHIP stream"),
                    "415": _error("not application/sdp"),
                    "503": _error("http.max_whip_pending or http.max_streams reached; see Retry-After"),
                    **COMMON}},
            },
            "/whip/{stream}/{session}": {
                "parameters": [{"name": "stream", "in": "path", "required": True, "schema": NAME},
                               {"name": "session", "in": "path", "required": True, "schema": {"type": "string"}}],
                "delete": {"summary": "End a WHIP session and its stream", "responses": {
                    "200": {"description": "ended"}, "404": _error("no such session"), **COMMON}},
            },
        },
    }


def add_routes(app: web.Application) -> None:
    body = document()

    async def serve(_request: web.Request) -> web.Response:
        return web.json_response(body)

    app.router.add_get("/openapi.json", serve)

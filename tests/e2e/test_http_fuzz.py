"""Fuzzing the HTTP API from its own description (/openapi.json) and the SDP offer parser, with hypothesis.

A live server on loopback gets a bounded number of requests built from the OpenAPI
document: bodies that follow the schemas, bodies with one field replaced by junk, junk
JSON, wrong content types, odd path parameters. Whatever comes, it must answer below
500, log no traceback, and be healthy afterwards. The SDP parser gets generated and
mutated offers: each is answered or refused with OfferError (a 400), never anything else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.parse
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamguard.config import WebRTCConfig
from streamguard.ingest import ice
from streamguard.ingest.webrtc import MAX_MEDIA, OfferError, WhipSession, check_offer
from streamguard.server.openapi import document
from tests.support.harness import LOOPBACK_WEBRTC, live_config, live_pipeline
from tests.support.http import AUTH, TOKEN
from tests.support.webrtc import make_offer

DOC = document()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
SAFE_URL = st.one_of(  # no scheme, so FFmpeg opens nothing off this machine: file paths and a refused loopback port
    st.text(min_size=1, max_size=40).filter(lambda s: ":" not in s),
    st.just("rtsp://127.0.0.1:1/x"),
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values that satisfy the subset of JSON Schema the document uses (pydantic's output and ours)."""
    if "$ref" in schema:
        return from_schema(DOC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    if "anyOf" in schema or "oneOf" in schema:
        return st.one_of([from_schema(s) for s in schema.get("anyOf", schema.get("oneOf"))])
    kind = schema.get("type")
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=40)
    if kind in ("number", "integer"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if kind == "integer":
            return st.integers(low, high)
        return st.floats(low, high, exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema,
                         allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=3)
    if kind == "object" and "properties" in schema:
        props = {k: (SAFE_URL if k == "url" else from_schema(v)) for k, v in schema["properties"].items()}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries({k: v for k, v in props.items() if k in required},
                                     optional={k: v for k, v in props.items() if k not in required})
    return JSON


def with_junk(body: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The schema's bodies, the same with one field's value replaced by junk, and junk."""
    def spoil(data: st.DataObject, value: Any) -> Any:
        if isinstance(value, dict) and value:
            key = data.draw(st.sampled_from(sorted(value)))
            return {**value, key: data.draw(JSON)}
        return value
    return st.one_of(body, st.builds(spoil, st.data(), body), JSON)


OFFER_LINES = [
    "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0", "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 127.0.0.1", "a=mid:0", "a=sendonly", "a=recvonly", "a=rtcp-mux",
    "a=rtpmap:96 H264/90000", "a=rtpmap:96 VP8/90000", "a=fmtp:96 packetization-mode=1", "a=ice-ufrag:abcd",
    "a=ice-pwd:0123456789abcdef01234567", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "a=ssrc:1 cname:x", "a=extmap:1 urn:x",
]
SDP_TEXT = st.lists(
    st.one_of(st.sampled_from(OFFER_LINES), st.text(max_size=30), st.sampled_from(OFFER_LINES).flatmap(
        lambda line: st.text(max_size=12).map(lambda junk: line + junk))),
    max_size=40,
).map("\r\n".join)


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in DOC["paths"].items() for method, op in item.items() if method != "parameters"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None, set[int]]:
    """(method, path, headers, body, the statuses the document allows) for one operation, or a near miss."""
    method, path, op = draw(st.sampled_from(operations()))
    for name in re.findall(r"{(\w+)}", path):
        value = draw(st.one_of(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True), st.text(min_size=1, max_size=80)))
        path = path.replace("{" + name + "}", urllib.parse.quote(value, safe=""))
    headers = dict(AUTH) if draw(st.integers(0, 9)) else {}
    body: bytes | None = None
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        value = draw(with_junk(from_schema(content["application/json"]["schema"])))
        body = json.dumps(value).encode() if draw(st.integers(0, 9)) else draw(st.binary(max_size=200))
        headers["Content-Type"] = draw(st.sampled_from(["application/json"] * 8 + ["text/plain", "application/sdp"]))
    elif "application/sdp" in content:
        body = draw(st.one_of(SDP_TEXT.map(str.encode), st.binary(max_size=300)))
        headers["Content-Type"] = draw(st.sampled_from(["application/sdp"] * 8 + ["application/json", "text/plain"]))
    return method, path, headers, body, {int(code) for code in op["responses"]} | GENERIC


GENERIC = {404, 405, 413}  # any route: a path parameter that does not route, a body over http.max_body_bytes


def check_answer(request: tuple[str, str, dict[str, str], bytes | None, set[int]], status: int, headers: Any, text: str) -> None:
    """Below 500 but for a documented 503 (a limit, with Retry-After); a status the document lists; JSON errors."""
    method, path, _, body, allowed = request
    what = (method, path, body and body[:200], status, text[:300])
    assert status in allowed, what
    assert status < 500 or (status == 503 and "Retry-After" in headers), what
    assert "Traceback" not in text, what


@pytest.fixture
async def fuzzed_server(redis_server):
    cfg = live_config(serve=True, token=TOKEN, http={"max_streams": 3, "max_whip_pending": 2, "rate_per_client": 0,
                                                     "forget_after_s": 0.5})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession() as http:
        yield live, http


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=requests())
async def test_the_live_api_answers_every_generated_request_below_500(fuzzed_server, request):
    live, http = fuzzed_server
    method, path, headers, body, _ = request
    async with http.request(method, live.server.url + path, headers=headers, data=body) as resp:
        check_answer(request, resp.status, resp.headers, await resp.text(errors="replace"))
        if resp.status >= 400:
            assert resp.content_type == "application/json"


async def test_after_fuzzing_the_server_is_healthy_and_logged_no_error(fuzzed_server, caplog):
    """The fuzz above once more, in this test's own loop, so that its log and health can be read after."""
    live, http = fuzzed_server
    caplog.set_level(logging.INFO)
    cases = []

    @settings(max_examples=80, deadline=None, database=None, derandomize=True)
    @given(request=requests())
    def collect(request):
        cases.append(request)

    collect()
    statuses = set()
    for request in cases:
        method, path, headers, body, _ = request
        async with http.request(method, live.server.url + path, headers=headers, data=body) as resp:
            check_answer(request, resp.status, resp.headers, await resp.text(errors="replace"))
            statuses.add(resp.status)
    assert {200, 400, 401} <= statuses, statuses  # the cases reached handlers, validation and auth
    async with http.get(live.server.url + "/healthz") as resp:
        assert resp.status == 200 and (await resp.json())["status"] == "ok"
    # Streams the fuzzer added may fail to open (logged as errors by the pipeline, as they should be); the server
    # itself logged no failed request, and nothing logged a traceback.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("streamguard.server") and r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert "Traceback" not in caplog.text


def test_the_document_describes_every_route_the_server_has():
    from streamguard.server.app import build_app

    app = build_app(live_config(serve=True).http, control=None)  # type: ignore[arg-type]  # routes only
    routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}
    described = {(method, path) for method, path, _ in operations()}
    assert routes == described


@settings(max_examples=400, deadline=None)
@given(sdp=st.one_of(SDP_TEXT, st.text(max_size=500)))
def test_check_offer_refuses_with_offer_error_or_passes(sdp):
    try:
        check_offer(sdp)
    except OfferError as err:
        assert str(err) and "\n" not in str(err)


@pytest.fixture(scope="module")
def real_offer() -> str:

    async def offer() -> str:
        pc = await make_offer()
        try:
            return pc.localDescription.sdp
        finally:
            await pc.close()

    return asyncio.run(offer())


@st.composite
def mutated(draw: st.DrawFn, offer: str) -> str:
    """A real offer with lines dropped, repeated, cut or replaced."""
    lines = offer.split("\r\n")
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "repeat", "cut", "replace"]))
        if action == "drop":
            del lines[i]
        elif action == "repeat":
            lines[i:i] = [lines[i]] * draw(st.integers(1, 3))
        elif action == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            lines[i] = draw(st.sampled_from(OFFER_LINES) | st.text(max_size=30))
        if not lines:
            lines = [""]
    return "\r\n".join(lines)


def test_whip_accepts_or_refuses_mutated_offers_with_offer_error_only(real_offer):
    ice.configure(WebRTCConfig(**LOOPBACK_WEBRTC))

    @settings(max_examples=60, deadline=None, database=None)
    @given(sdp=mutated(real_offer))
    def check(sdp: str) -> None:
        async def accept() -> None:
            try:
                session = await WhipSession.accept(sdp, WebRTCConfig(**LOOPBACK_WEBRTC))
            except OfferError:
                return
            await session.close()

        asyncio.run(accept())

    check()
    assert MAX_MEDIA >= 3  # a browser's audio + video (+ data) always fit

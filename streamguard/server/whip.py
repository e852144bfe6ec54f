"""WHIP ingest (RFC 9725): a publisher POSTs an SDP offer, we answer and analyse its video.

    POST   /whip/{stream}             application/sdp offer -> 201, Location, SDP answer
    DELETE /whip/{stream}/{session}   ends the session and the stream

No trickle ICE and no ICE restart (PATCH gets 405): the answer already holds every
candidate, which RFC 9725 allows and browsers handle. CORS (middleware.py) lets a
web page publish. A malformed offer, one without video or without H.264/VP8 gets
400 (so does one that is not UTF-8 or has more than MAX_MEDIA m= sections); a name
used by a non-WHIP stream gets 409; a second publisher for the same name replaces the
first (control.py). Beyond `http.max_whip_pending` sessions being set up, or
`http.max_streams` streams, an offer gets 503 with Retry-After.
"""

from __future__ import annotations

from aiohttp import web

from streamguard.config import STREAM_NAME
from streamguard.ingest.webrtc import OfferError, WhipSession
from streamguard.server.api import CONTROL, busy
from streamguard.server.control import Busy, StreamConflict, UnknownStream

SDP = "application/sdp"


def add_routes(app: web.Application) -> None:
    app.router.add_post("/whip/{stream}", publish)
    app.router.add_delete("/whip/{stream}/{session}", unpublish)


async def publish(request: web.Request) -> web.Response:
    name = request.match_info["stream"]
    if not STREAM_NAME.match(name):
        raise web.HTTPBadRequest(text=f"bad stream name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    if request.content_type != SDP:
        raise web.HTTPUnsupportedMediaType(text=f"send the SDP offer as {SDP}")
    try:
        offer = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the SDP offer is not UTF-8 text") from None
    control = request.app[CONTROL]
    try:
        with control.whip_setup():
            session = await WhipSession.accept(offer, control.cfg.webrtc)
    except OfferError as err:
        raise web.HTTPBadRequest(text=str(err)) from None
    except Busy as err:
        raise busy(err) from None
    try:
        await control.add_whip(name, session, request.remote or "unknown")
    except StreamConflict as err:
        await session.close()
        raise web.HTTPConflict(text=str(err)) from None
    except Busy as err:
        await session.close()
        raise busy(err) from None
    except BaseException:
        await session.close()
        raise
    headers = {"Location": f"/whip/{name}/{session.id}", "ETag": f'"{session.id}"'}
    return web.Response(status=201, text=session.answer, content_type=SDP, headers=headers)


async def unpublish(request: web.Request) -> web.Response:
    try:
        await request.app[CONTROL].remove(request.match_info["stream"], session_id=request.match_info["session"])
    except UnknownStream as err:
        raise web.HTTPNotFound(text=str(err)) from None
    return web.Response(status=200)

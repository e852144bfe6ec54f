"""A client of Janus's plain HTTP API (the "REST" transport): one session, its handles, its events.

Janus answers a plugin request in one of two ways: synchronously in the HTTP reply
(`"janus": "success"`: VideoRoom's `list`, `listparticipants`), or with an `ack`
followed by an event (`join`, `start`: anything with SDP). Events arrive on the
session's long poll (GET /janus/<session>), which this client keeps open in one owned
task; an event that carries a request's transaction completes that request. The long
poll also keeps the session alive (Janus drops a session after `session_timeout` with
no request). When the poll fails (Janus restarted: "no such session"; or unreachable)
the session is `dead`, every waiting request fails with ServerUnavailable, and the
owner opens a new one.

Credentials: `api_secret` and `token` go in each request's body (and the long poll's
query), never into a log line or error; errors name the server by its redacted URL.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import aiohttp

from streamguard.connectors.base import ServerUnavailable
from streamguard.errors import StreamguardError
from streamguard.redact import redact_url

log = logging.getLogger(__name__)

LONG_POLL_EVENTS = 10  # events per long-poll reply (maxev)
LONG_POLL_READ_S = 45.0  # Janus answers an idle long poll after 30 s with a keepalive
NO_SUCH_SESSION = 458


class JanusError(StreamguardError):
    """Janus or its plugin refused a request (the message is Janus's reason, `code` its error code)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class JanusSession:
    """One Janus session over HTTP: requests, handles and the event long poll."""

    def __init__(self, url: str, api_secret: str | None, token: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.where = redact_url(self.url)
        self.timeout = timeout
        self.dead = False
        self._auth = {k: v for k, v in (("apisecret", api_secret), ("token", token)) if v}
        self._http: aiohttp.ClientSession | None = None
        self._id: str | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poll: asyncio.Task[None] | None = None

    async def open(self) -> JanusSession:
        """Create the session and start its long poll; ServerUnavailable if Janus does not answer."""
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            reply = await self._post("", {"janus": "create"})
        except BaseException:
            await self._http.close()
            raise
        self._id = str(reply["data"]["id"])
        self._poll = asyncio.create_task(self._long_poll(), name=f"janus-poll-{self._id}")
        return self

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> str:
        """A new handle on `plugin`."""
        reply = await self._post(f"/{self._id}", {"janus": "attach", "plugin": plugin})
        return str(reply["data"]["id"])

    async def detach(self, handle: str) -> None:
        """Drop a handle (Janus hangs up its PeerConnection); quietly, it may be gone already."""
        if self.dead:
            return
        try:
            await self._post(f"/{self._id}/{handle}", {"janus": "detach"})
        except StreamguardError as err:  # unreachable, or Janus no longer has the handle
            log.debug("janus %s: detach %s: %s", self.where, handle, err)

    async def request(self, handle: str, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request: the plugin's data; JanusError if it reports an error."""
        reply = await self._post(f"/{self._id}/{handle}", {"janus": "message", "body": body})
        return _plugin_data(reply)

    async def message(
        self, handle: str, body: dict[str, Any], jsep: dict[str, str] | None = None
    ) -> tuple[dict[str, Any], dict[str, str] | None]:
        """An asynchronous plugin request: (the plugin's data, its JSEP) from the event answering it."""
        transaction = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = future
        try:
            message: dict[str, Any] = {"janus": "message", "body": body}
            if jsep is not None:
                message["jsep"] = jsep
            reply = await self._post(f"/{self._id}/{handle}", message, transaction)
            event = reply if reply.get("janus") == "event" else await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise ServerUnavailable(f"janus {self.where}: no answer to {body.get('request')} within {self.timeout:g} s") from None
        finally:
            self._waiting.pop(transaction, None)
        return _plugin_data(event), event.get("jsep")

    async def close(self) -> None:
        """Stop the long poll and destroy the session (if Janus still has it)."""
        if self._poll is not None:
            self._poll.cancel()
            await asyncio.gather(self._poll, return_exceptions=True)
        if self._http is not None:
            if not self.dead and self._id is not None:
                try:
                    await self._post(f"/{self._id}", {"janus": "destroy"})
                except ServerUnavailable:
                    pass
            await self._http.close()
        self._fail(ServerUnavailable(f"janus {self.where}: session closed"))

    async def _post(self, path: str, body: dict[str, Any], transaction: str | None = None) -> dict[str, Any]:
        assert self._http is not None
        body = {**body, "transaction": transaction or secrets.token_hex(8), **self._auth}
        try:
            async with self._http.post(self.url + path, json=body) as resp:
                reply = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            raise ServerUnavailable(f"janus {self.where}: {_describe(err)}") from None
        if not isinstance(reply, dict):
            raise ServerUnavailable(f"janus {self.where}: unexpected reply")
        if reply.get("janus") == "error":
            error = reply.get("error", {})
            reason = f"janus {self.where}: {error.get('reason', 'error')} ({error.get('code')})"
            if error.get("code") == NO_SUCH_SESSION:  # Janus restarted, or the session timed out
                self.dead = True
                raise ServerUnavailable(reason)
            raise JanusError(reason, error.get("code"))
        return reply

    async def _long_poll(self) -> None:
        """Deliver events to the requests waiting for them until the session dies."""
        assert self._http is not None
        params = {"maxev": str(LONG_POLL_EVENTS), **self._auth}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=LONG_POLL_READ_S)
        try:
            while True:
                async with self._http.get(f"{self.url}/{self._id}", params=params, timeout=timeout) as resp:
                    events = await resp.json(content_type=None)
                for event in events if isinstance(events, list) else [events]:
                    if event.get("janus") == "error":
                        raise ServerUnavailable(f"janus {self.where}: {event.get('error', {}).get('reason', 'error')}")
                    future = self._waiting.get(str(event.get("transaction")))
                    if future is not None and not future.done() and event.get("janus") == "event":
                        future.set_result(event)
        except (aiohttp.ClientError, TimeoutError, ValueError, ServerUnavailable) as err:
            reason = err if isinstance(err, ServerUnavailable) else ServerUnavailable(f"janus {self.where}: {_describe(err)}")
            log.info("janus %s: session %s lost: %s", self.where, self._id, reason)
            self.dead = True
            self._fail(reason)

    def _fail(self, err: ServerUnavailable) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(err)


def _plugin_data(reply: dict[str, Any]) -> dict[str, Any]:
    data = reply.get("plugindata", {}).get("data", {})
    if "error" in data:
        raise JanusError(f"janus videoroom: {data['error']} ({data.get('error_code')})", data.get("error_code"))
    return data


def _describe(err: BaseException) -> str:
    """An aiohttp error in words, without the URL (it may hold credentials)."""
    if isinstance(err, aiohttp.ClientConnectorError):
        return err.os_error.strerror or type(err.os_error).__name__
    if isinstance(err, aiohttp.ClientResponseError):
        return f"HTTP {err.status}"
    return type(err).__name__ if not isinstance(err, TimeoutError) else "timed out"

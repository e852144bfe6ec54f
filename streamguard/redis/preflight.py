"""At start, tell a misconfigured Redis login from an outage.

A wrong password or an ACL user that may not run a command the sink needs will never
heal by retrying, so the sink refuses to start with one line that says what to fix
(`ConfigError`: the CLI prints it and exits 2). An unreachable, read-only, loading or
full Redis is different: it may well be fixed while we run, so it is only reported
and the sink buffers and retries as it would in any outage.

Permissions are checked without writing anything: the sink's own commands, with the
configured keys and channels, are queued inside MULTI and the connection is then
closed, which discards them. Redis checks ACLs (and memory, and read-only) when a
command is queued, so each one answers NOPERM or QUEUED. `ACL DRYRUN` would need
admin rights the sink's user should not have. EXEC cannot be checked this way; if it
is refused later, that shows as an outage with reason `noperm`.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, RedisError

from streamguard.config import RedisConfig
from streamguard.errors import ConfigError
from streamguard.redact import redact_url
from streamguard.redis.faults import RedisFault, classify, server_reply

log = logging.getLogger(__name__)

PROBE_CHANNEL_SUFFIX = "probe"  # scores go to PREFIX<stream>; any stream name stands for all


def sink_commands(cfg: RedisConfig) -> list[tuple[str, ...]]:
    """The commands the sink sends, shaped as it sends them (ACLs may look at keys and channels)."""
    commands: list[tuple[str, ...]] = [
        ("XADD", cfg.stream_key, "MAXLEN", "~", str(cfg.maxlen), "*", "event", "{}"),
        ("PUBLISH", cfg.channel, "{}"),
        ("PUBLISH", cfg.scores_channel_prefix + PROBE_CHANNEL_SUFFIX, "{}"),
    ]
    if cfg.thumbnails:
        commands.append(("SET", cfg.thumbnail_prefix + PROBE_CHANNEL_SUFFIX, "", "EX", str(cfg.thumbnail_ttl_s)))
    return commands


async def check_access(url: str, cfg: RedisConfig) -> RedisFault | None:
    """Raise `ConfigError` if Redis refuses the login or a command the sink needs; return
    a passing fault (unreachable, read-only, out of memory...) or None when all is well."""
    where = redact_url(url)
    client = aioredis.Redis.from_url(
        url, single_connection_client=True, socket_connect_timeout=2.0, socket_timeout=5.0, retry=Retry(NoBackoff(), 0)
    )
    refused: list[str] = []
    stage = "connect"  # the login, HELLO, SELECT of the URL's database
    try:
        await client.initialize()
        stage = "MULTI"
        await client.execute_command("MULTI")
        for command in sink_commands(cfg):
            try:
                await client.execute_command(*command)
            except NoPermissionError as err:
                refused.append(f"{command[0]} {command[1]!r} ({server_reply(err)})")
    except RedisError as err:
        reason = classify(err)
        if reason == "auth":
            raise ConfigError(f"redis.url: Redis at {where} refused the login: {server_reply(err)}") from None
        if reason == "noperm":  # on connecting, or MULTI itself: nothing was queued after it
            refused.append(f"{stage} ({server_reply(err)})")
        else:
            return RedisFault(reason, f"start-up check ({stage})", "", server_reply(err))
    except OSError as err:
        return RedisFault(classify(err), "start-up check", "", server_reply(err))
    finally:
        await client.aclose()  # discards the queued transaction
    if refused:
        raise ConfigError(
            f"redis.url: the Redis user at {where} may not run what the sink needs: {'; '.join(refused)}; "
            "it needs +multi +exec +xadd +publish (+set with thumbnails, +select for a database other than 0) "
            "on the configured keys and channels"
        )
    return None

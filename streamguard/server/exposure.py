"""Who may reach the server: the start-up refusal of an open bind, the Host names it answers, its TLS context.

Why: with no token, whoever reaches the port controls streamguard (adds streams that
open any URL, reads every stream's status). On loopback that is this machine's users;
on any other address it is the network, so such a bind refuses to start unless the
config says `http.allow_insecure_bind: true`. The check runs before anything binds
(cli.py calls it first; HttpServer and FrontDoor call it again), so a refused address
is never listened on. The Host check stops DNS rebinding: a page on a name the
attacker controls, re-pointed at 127.0.0.1, reaches the port, but its requests carry
the attacker's name in Host, which is not ours.
"""

from __future__ import annotations

import ipaddress
import ssl

from streamguard.config import HttpConfig, parse_bind
from streamguard.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) is not part of the address
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`: addresses only this machine reaches."""
    ip = _ip(host)
    return ip.is_loopback if ip is not None else host.lower() in LOOPBACK_NAMES


def check_exposure(cfg: HttpConfig) -> None:
    """ConfigError (one line; the CLI exits 2) if `cfg.bind` is not loopback and there is no token
    and no explicit opt-out, or the TLS files cannot be used. Binds nothing."""
    if cfg.bind is None:
        return
    host, _ = parse_bind(cfg.bind)
    if not is_loopback(host) and cfg.token is None and not cfg.allow_insecure_bind:
        raise ConfigError(
            f"http.bind {cfg.bind} is not a loopback address and http.token is not set: anyone who reaches it would "
            "control streamguard. Set a token (STREAMGUARD_HTTP_TOKEN), bind 127.0.0.1, or set http.allow_insecure_bind: true"
        )
    if cfg.tls_cert is not None:
        ssl_context(cfg)


def ssl_context(cfg: HttpConfig) -> ssl.SSLContext | None:
    """The server's TLS context from `tls_cert`/`tls_key` (None without them); ConfigError if unusable."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"http.tls_cert/tls_key: cannot load {cfg.tls_cert} and {cfg.tls_key}: {err}") from None
    return context


def host_names(cfg: HttpConfig) -> tuple[frozenset[str], bool]:
    """The Host names (lower case, no port) the server answers, and whether any IP literal is accepted too.

    A specific bound address answers to itself (and `localhost`, 127.0.0.1 and ::1 when it is
    loopback); a wildcard bind (0.0.0.0, ::) answers to any IP literal, since we cannot know which
    of our addresses a client used and a rebinding page never has an IP literal as its host.
    Names in `cfg.hosts` are accepted in either case."""
    names = {h.lower().rstrip(".") for h in cfg.hosts}
    any_ip = False
    if cfg.bind is not None:
        host, _ = parse_bind(cfg.bind)
        ip = _ip(host)
        if ip is not None and ip.is_unspecified:
            any_ip = True
        else:
            names.add(str(ip) if ip is not None else host.lower())
        if is_loopback(host):
            names |= {"localhost", "127.0.0.1", "::1"}
    return frozenset(names), any_ip


def host_of(header: str) -> str:
    """The name or address in a Host header, without port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, _, port = header.rpartition(":")
    return name.rstrip(".") if name and port.isdigit() else header.rstrip(".")

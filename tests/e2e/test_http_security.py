"""Who may use the HTTP server and how much (docs/security.md), against a real server on loopback:
the Host check (DNS rebinding), CORS only for WHIP and listed origins, the refusal of an open bind,
TLS with a generated certificate, and the limits (streams, WHIP set-ups, request rate, forgetting
ended streams)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from streamguard.config import HttpConfig
from streamguard.errors import ConfigError
from streamguard.redis.embedded import free_port
from streamguard.server.exposure import check_exposure, host_of, host_names
from streamguard.server.ratelimit import TokenBuckets
from tests.support.harness import live_config, live_pipeline
from tests.support.cli import STREAMGUARD
from tests.support.http import AUTH, TOKEN, poll
from tests.support.webrtc import SDP, make_offer

# --- A: who may use it


async def test_a_foreign_host_header_is_refused_and_ours_pass(redis_server):
    cfg = live_config(serve=True, token=TOKEN, http={"hosts": ["streamguard.example"]})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession(headers=AUTH) as http:
        port = live.server.port
        for host in ("rebound.attacker.example", f"rebound.attacker.example:{port}", "192.168.1.5", "streamguard.example.evil"):
            async with http.get(f"{live.server.url}/streams", headers={"Host": host}) as resp:
                assert resp.status == 421, host
                assert "does not answer for host" in (await resp.json())["error"]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "streamguard.example", f"STREAMGUARD.example:{port}", f"[::1]:{port}"):
            async with http.get(f"{live.server.url}/streams", headers={"Host": host}) as resp:
                assert resp.status == 200, host


def test_host_names_for_each_kind_of_bind():
    assert host_names(HttpConfig(bind="127.0.0.1:80")) == (frozenset({"127.0.0.1", "localhost", "::1"}), False)
    assert host_names(HttpConfig(bind="10.1.2.3:80", token="t", hosts=["cams.example."])) == (frozenset({"10.1.2.3", "cams.example"}), False)
    assert host_names(HttpConfig(bind="0.0.0.0:80", token="t")) == (frozenset(), True)  # any IP literal; names must be listed
    assert [host_of(h) for h in ("a.example:80", "[::1]:8080", "LOCALHOST", "a.example.")] == ["a.example", "::1", "localhost", "a.example"]


async def test_control_routes_are_not_served_cross_origin_and_whip_is_for_listed_origins(redis_server):
    cfg = live_config(serve=True, token=TOKEN, http={"cors_origins": ["https://app.example"]})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession() as http:
        base = live.server.url
        for origin in ("https://app.example", "https://evil.example", "null"):
            preflight = {"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
            async with http.options(f"{base}/streams", headers=preflight) as resp:
                assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
            async with http.post(f"{base}/streams", json={"name": "x", "url": "rtsp://127.0.0.1:1/x"},
                                 headers={"Origin": origin, **AUTH}) as resp:
                assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
        assert not live.pipeline.workers  # the cross-origin POST (token and all) added nothing
        async with http.get(f"{base}/streams", headers={"Origin": base, **AUTH}) as resp:
            assert resp.status == 200  # our own origin is not cross-origin

        preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization, content-type"}
        async with http.options(f"{base}/whip/cam", headers=preflight) as resp:
            assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
        async with http.post(f"{base}/whip/cam", data="v=0", headers={"Origin": "https://app.example", "Content-Type": "application/sdp"}) as resp:
            assert resp.status == 401 and resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
            assert "Location" in resp.headers["Access-Control-Expose-Headers"]  # the page can read why, and a 201's Location
        async with http.options(f"{base}/whip/cam", headers={**preflight, "Origin": "https://evil.example"}) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers

    default = live_config(serve=True, token=TOKEN)  # cors_origins defaults to none: no page may publish
    async with live_pipeline(redis_server.url, default) as live, aiohttp.ClientSession() as http:
        async with http.options(f"{live.server.url}/whip/cam", headers=preflight) as resp:
            assert "Access-Control-Allow-Origin" not in resp.headers


def test_the_bind_check_refuses_an_open_address_and_allows_the_safe_ones():
    for bind in ("0.0.0.0:0", "10.0.0.1:8080", "[::]:8080", "cams.example:80"):
        with pytest.raises(ConfigError, match="not a loopback address and http.token is not set"):
            check_exposure(HttpConfig(bind=bind))
        check_exposure(HttpConfig(bind=bind, token="t"))
        check_exposure(HttpConfig(bind=bind, allow_insecure_bind=True))
    for bind in ("127.0.0.1:0", "127.8.9.1:80", "[::1]:0", "localhost:0"):
        check_exposure(HttpConfig(bind=bind))


def _unshare_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged network namespaces (unshare -rn)")
@pytest.mark.parametrize("bind", ["0.0.0.0:0", "10.0.0.1:8080"])
def test_streamguard_run_refuses_an_open_bind_without_a_token(bind):
    """In a network namespace of its own (only a loopback that is down), so that even a check that
    passed by mistake would bind nothing anyone could reach."""
    env = {k: v for k, v in os.environ.items() if k != "STREAMGUARD_HTTP_TOKEN"}
    proc = subprocess.run(["unshare", "-rn", STREAMGUARD, "run", "--http", bind, "--redis-url", "redis://127.0.0.1:1"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"streamguard: error: http.bind {bind} is not a loopback address"), lines


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamguard test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_serves_https_and_the_token_works_over_it(redis_server, tmp_path):
    cert, key = _certificate(tmp_path)
    cfg = live_config(serve=True, token=TOKEN, http={"tls_cert": str(cert), "tls_key": str(key), "metrics_token": True})
    client_ssl = ssl.create_default_context(cafile=str(cert))  # verifies the certificate and the 127.0.0.1 in it
    async with live_pipeline(redis_server.url, cfg) as live:
        assert live.server.url.startswith("https://127.0.0.1:")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl)) as https:
            async with https.get(f"{live.server.url}/streams", headers=AUTH) as resp:
                assert resp.status == 200 and await resp.json() == {"streams": []}
            async with https.get(f"{live.server.url}/streams") as resp:
                assert resp.status == 401
            async with https.get(f"{live.server.url}/metrics") as resp:
                assert resp.status == 401  # metrics_token: the scraper needs the token too
            async with https.get(f"{live.server.url}/metrics", headers=AUTH) as resp:
                assert resp.status == 200 and "streamguard_frames_decoded" in await resp.text()
        async with aiohttp.ClientSession() as plain:  # the token never crosses in the clear: plain HTTP gets no answer
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(live.server.url.replace("https", "http") + "/streams", headers=AUTH) as resp:
                    await resp.read()


def test_tls_needs_both_files_and_usable_ones(tmp_path):
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        HttpConfig(bind="127.0.0.1:0", tls_cert=tmp_path / "c.pem")
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load"):
        check_exposure(HttpConfig(bind="127.0.0.1:0", tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "c.pem"))


# --- B: limits


def test_default_limits_are_sized_for_one_process():
    cfg = HttpConfig()
    assert (cfg.max_streams, cfg.cors_origins, cfg.allow_insecure_bind, cfg.metrics_token) == (64, [], False, False)
    assert cfg.max_whip_pending >= 1 and cfg.rate_per_client > 0 and cfg.forget_after_s > 0


async def test_a_stream_beyond_max_streams_gets_503_with_retry_after(redis_server):
    cfg = live_config(serve=True, token=TOKEN, http={"max_streams": 2})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession(headers=AUTH) as http:
        for i in range(2):
            async with http.post(f"{live.server.url}/streams", json={"name": f"cam{i}", "url": f"rtsp://127.0.0.1:{free_port()}/x"}) as resp:
                assert resp.status == 201
        async with http.post(f"{live.server.url}/streams", json={"name": "cam2", "url": f"rtsp://127.0.0.1:{free_port()}/x"}) as resp:
            assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0
            assert "http.max_streams" in (await resp.json())["error"]
        pc = await make_offer()
        try:  # a WHIP publisher is a stream too
            async with http.post(f"{live.server.url}/whip/cam3", data=pc.localDescription.sdp, headers=SDP) as resp:
                assert resp.status == 503 and "Retry-After" in resp.headers
        finally:
            await pc.close()
        assert sorted(live.pipeline.workers) == ["cam0", "cam1"]
        async with http.delete(f"{live.server.url}/streams/cam0") as resp:
            assert resp.status == 200
        async with http.post(f"{live.server.url}/streams", json={"name": "cam2", "url": f"rtsp://127.0.0.1:{free_port()}/x"}) as resp:
            assert resp.status == 201  # room again


async def test_whip_sessions_being_set_up_are_capped(redis_server):
    cfg = live_config(serve=True, token=TOKEN, http={"max_whip_pending": 1})
    publishers = [await make_offer(), await make_offer()]
    try:
        async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession(headers=AUTH) as http:
            # The first publisher never applies the answer: its session stays being set up.
            async with http.post(f"{live.server.url}/whip/first", data=publishers[0].localDescription.sdp, headers=SDP) as resp:
                assert resp.status == 201
            async with http.post(f"{live.server.url}/whip/second", data=publishers[1].localDescription.sdp, headers=SDP) as resp:
                assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0
                assert "WHIP sessions are being set up" in (await resp.json())["error"]
            assert sorted(live.pipeline.workers) == ["first"]
            async with http.delete(f"{live.server.url}/streams/first") as resp:
                assert resp.status == 200
            async with http.post(f"{live.server.url}/whip/second", data=publishers[1].localDescription.sdp, headers=SDP) as resp:
                assert resp.status == 201  # the place freed with the abandoned session
    finally:
        for pc in publishers:
            await pc.close()


async def test_a_client_over_its_request_rate_gets_429_with_retry_after(redis_server):
    cfg = live_config(serve=True, token=TOKEN, http={"rate_per_client": 0.5, "rate_burst": 3})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession(headers=AUTH) as http:
        statuses = []
        for _ in range(4):
            async with http.get(f"{live.server.url}/healthz") as resp:
                statuses.append(resp.status)
                retry_after = resp.headers.get("Retry-After")
        assert statuses == [200, 200, 200, 429] and retry_after is not None and 1 <= int(retry_after) <= 2


def test_token_buckets_refill_at_the_rate_and_forget_full_buckets():
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=2, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5) and buckets.take("b") == 0.0  # another client is not slowed
    now[0] = 0.5
    assert buckets.take("a") == 0.0 and buckets.take("a") == pytest.approx(0.5)
    now[0] = 100.0
    buckets._sweep(now[0])
    assert buckets._buckets == {}


async def test_an_api_stream_that_failed_is_forgotten_with_its_metric_series(redis_server, tmp_path):
    cfg = live_config(serve=True, token=TOKEN, http={"forget_after_s": 1.0}, sources={"api_file_dirs": [str(tmp_path)]})
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession(headers=AUTH) as http:
        base = live.server.url
        broken = tmp_path / "broken.mp4"  # a file the source policy lets the API open; not a video, and a file
        broken.write_bytes(b"not a video")  # is not retried: the stream fails
        async with http.post(f"{base}/streams", json={"name": "gone", "url": str(broken)}) as resp:
            assert resp.status == 201
        await poll(http, f"{base}/streams/gone", lambda s: s.get("state") == "failed", 10)
        async with http.get(f"{base}/metrics") as resp:
            assert 'stream="gone"' in await resp.text()
        await poll(http, f"{base}/streams/gone", lambda s: s.get("status") == 404, 10)
        async with http.get(f"{base}/metrics") as resp:
            assert 'stream="gone"' not in await resp.text()
        async with http.get(f"{base}/streams") as resp:
            assert await resp.json() == {"streams": []}


async def test_the_front_door_applies_the_same_host_cors_rate_and_tls_rules(tmp_path):
    """`run --processes N --http`: the front door is what clients reach (its workers listen on loopback)."""
    from streamguard.server.front_door import FrontDoor

    cert, key = _certificate(tmp_path)
    cfg = HttpConfig(bind="127.0.0.1:0", token=TOKEN, tls_cert=cert, tls_key=key, rate_per_client=0.5, rate_burst=4,
                     cors_origins=["https://app.example"])
    door = FrontDoor(cfg, count=1)
    await door.start()
    try:
        assert door.url.startswith("https://")
        connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(cert)))
        async with aiohttp.ClientSession(door.url, connector=connector) as http:
            async with http.get("/streams", headers={"Host": "rebound.attacker.example"}) as resp:
                assert resp.status == 421
            async with http.get("/streams", headers={"Origin": "https://app.example", **AUTH}) as resp:
                assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
            preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
            async with http.options("/whip/cam", headers=preflight) as resp:
                assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
            async with http.get("/openapi.json") as resp:
                assert resp.status == 200 and (await resp.json())["openapi"].startswith("3.")
            async with http.get("/streams") as resp:
                assert resp.status == 401
            async with http.get("/streams", headers=AUTH) as resp:
                assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1  # the 5th after the 421 (refused first, uncounted)
    finally:
        await door.close()


def test_open_front_door_bind_is_refused_before_it_listens():
    from streamguard.server.front_door import FrontDoor

    with pytest.raises(ConfigError, match="not a loopback address"):
        FrontDoor(HttpConfig(bind="0.0.0.0:0"), count=1)


# --- C: honest answers


async def test_bad_scoring_overrides_and_bad_sdp_offers_get_400_naming_the_problem(redis_server, caplog):
    cfg = live_config(serve=True, token=TOKEN)
    async with live_pipeline(redis_server.url, cfg) as live, aiohttp.ClientSession(headers=AUTH) as http:
        base = live.server.url
        bad_scoring = [
            ({"threshold": 2}, "invalid value for 'scoring.threshold': Input should be less than or equal to 1"),
            ({"window_s": "long"}, "invalid value for 'scoring.window_s': Input should be a valid number"),
            ({"nope": 1}, "invalid value for 'scoring.nope': unknown field"),
            ({"policy": "max"}, "invalid value for 'scoring.policy'"),
        ]
        for scoring, needle in bad_scoring:
            async with http.post(f"{base}/streams", json={"name": "cam", "url": "rtsp://127.0.0.1:1/x", "scoring": scoring}) as resp:
                assert resp.status == 400 and needle in (await resp.json())["error"], scoring
        async with http.post(f"{base}/streams", json={"name": "cam", "url": "rtsp://127.0.0.1:1/x", "scoring": [1]}) as resp:
            assert resp.status == 400 and "'scoring'" in (await resp.json())["error"]
        assert not live.pipeline.workers

        pc = await make_offer()
        good = pc.localDescription.sdp
        await pc.close()
        video = good[good.index("m=video"):]
        bad_offers = [
            (b"v=0\r\n\xff\xfe\xfd not utf-8", "not UTF-8"),
            (("v=0\r\n" + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" * 500).encode(), "500 media sections; at most 16"),
            ((good + video * 20).encode(), "media sections; at most 16"),
            (b"\x00" * 1000, "SDP offer"),
        ]
        for body, needle in bad_offers:
            async with http.post(f"{base}/whip/cam", data=body, headers=SDP) as resp:
                assert resp.status == 400, (body[:60], resp.status)
                assert needle in (await resp.json())["error"], body[:60]
        assert not live.pipeline.workers and not live.server.control.whip
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
    assert "Traceback" not in caplog.text and "failed" not in caplog.text


def test_workers_behind_the_front_door_keep_the_token_and_leave_tls_and_the_rate_to_it(tmp_path):
    from streamguard.config import Config
    from streamguard.supervisor import WORKER_BIND, worker_config

    cert, key = _certificate(tmp_path)
    cfg = Config(http=HttpConfig(bind="0.0.0.0:8443", token=TOKEN, tls_cert=cert, tls_key=key, hosts=["cams.example"]))
    http = worker_config(cfg, [], WORKER_BIND)["http"]
    assert (http["bind"], http["token"], http["tls_cert"], http["tls_key"], http["rate_per_client"]) == (WORKER_BIND, TOKEN, None, None, 0.0)
    check_exposure(HttpConfig(**http))  # loopback: a worker starts even where the front door needed a token

"""One redaction for every URL that leaves the process, and log records that stay one line.

Table-driven examples of every secret a stream URL carries (user info with any
character, secret-named parameters in the query or the fragment, the RTMP stream
key), hypothesis properties over generated URLs (the secret never comes out,
redacting twice changes nothing, a URL without secrets comes out unchanged, no text
makes it raise), and the log formatter with a newline in a URL.
"""

from __future__ import annotations

import io
import logging
import re

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from streamguard.config import parse_stream_arg
from streamguard.errors import ConfigError
from streamguard.logsafe import SafeFormatter, safe_line
from streamguard.redact import MASK, escape_control, is_local_path, redact_text, redact_url

# --- examples -----------------------------------------------------------------------

EXAMPLES = [
    # user info, whatever characters the password holds
    ("rtsp://user:pass@host/x", "rtsp://***@host/x"),
    ("rtsp://admin@host:554", "rtsp://***@host:554"),
    ("rtsp://@host/x", "rtsp://@host/x"),  # nothing to hide
    ("rtsp://u:p#a?ss@host/x", "rtsp://***@host/x"),
    ("rtsp://u:p@ss@host:554/live?channel=1", "rtsp://***@host:554/live?channel=1"),
    ("rtsp://u:pa/ss@host/x", "rtsp://***@host/x"),
    ("rtsp://u:p%40ss%3A@host/x", "rtsp://***@host/x"),
    ("rtsp://u:p:a:ss@[::1]:8554/x", "rtsp://***@[::1]:8554/x"),
    ("rtsp:user:pass@host/x", "rtsp:***@host/x"),  # FFmpeg takes the scheme without //
    ("redis://:s3cret@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
    ("whep+https://u:p@h/whep", "whep+https://***@h/whep"),
    ("cache:rtsp://u:p@h/x", "cache:***@h/x"),
    # an '@' after the host: everything up to it may be a password, so it is hidden
    ("http://h/x?email=a@b.com&q=1", "http://***@b.com&q=1"),
    ("http://h/x?token=a@b", "http://***"),
    # secret-named parameters, any case, repeated, in the fragment too
    ("http://h/x?api_key=abc&format=hls", "http://h/x?api_key=***&format=hls"),
    ("http://h/x?apikey=abc", "http://h/x?apikey=***"),
    ("http://h/x?apiKey=abc&API_KEY=def", "http://h/x?apiKey=***&API_KEY=***"),
    ("http://h/x?key=1&key=2&x=3", "http://h/x?key=***&key=***&x=3"),
    ("http://h/x?Token=1;access_token=2", "http://h/x?Token=***;access_token=***"),
    ("http://h/x#access_token=abc&expires_in=3600", "http://h/x#access_token=***&expires_in=3600"),
    ("http://h/x?a=1#b=2&client_secret=3", "http://h/x?a=1#b=2&client_secret=***"),
    ("http://h/x?password=1&passwd=2&pwd=3&pass=4", "http://h/x?password=***&passwd=***&pwd=***&pass=***"),
    ("http://h/x?SIG=1&Session=2&auth=3&Authorization=4", "http://h/x?SIG=***&Session=***&auth=***&Authorization=***"),
    ("http://h/x?credential=1&oauth_signature=2", "http://h/x?credential=***&oauth_signature=***"),
    ("http://h/x?api%5Fkey=abc", "http://h/x?api%5Fkey=***"),  # a percent-encoded name
    ("http://h/x;jsessionid=ABC", "http://h/x;jsessionid=***"),
    ("http://h/x?token=", "http://h/x?token="),  # nothing to hide
    (
        "https://b.s3.amazonaws.com/v.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20250101"
        "&X-Amz-Date=20250101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
        "&X-Amz-Security-Token=FQoG&X-Amz-Signature=deadbeef",
        "https://b.s3.amazonaws.com/v.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***"
        "&X-Amz-Date=20250101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
        "&X-Amz-Security-Token=***&X-Amz-Signature=***",
    ),
    ("https://a.blob.core.windows.net/c/v.mp4?sv=2022&sig=abc%2Bdef", "https://a.blob.core.windows.net/c/v.mp4?sv=2022&sig=***"),
    # a secret value holding '#' or '&' stays hidden up to the next name=
    ("http://h/x?token=ab#cd", "http://h/x?token=***"),
    ("http://h/x?token=ab&cd&x=1", "http://h/x?token=***&x=1"),
    # SRT: the passphrase and the streamid (access control: MediaMTX reads user:pass in it)
    ("srt://10.0.0.5:9000?mode=caller&passphrase=s3cret#x&latency=200", "srt://10.0.0.5:9000?mode=caller&passphrase=***&latency=200"),
    ("srt://h:8890?streamid=read:cam:user:pass&latency=20", "srt://h:8890?streamid=***&latency=20"),
    ("srt://h:9000?streamid=#!::r=live,u=bob,s=xyz", "srt://h:9000?streamid=***"),
    # the RTMP stream key: everything after the application
    ("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl", "rtmp://a.rtmp.youtube.com/live2/***"),
    ("rtmps://live-api-s.facebook.com:443/rtmp/FB-123-0-Ab?s_bl=1", "rtmps://live-api-s.facebook.com:443/rtmp/***"),
    ("RTMP://host/app/inst/key", "RTMP://host/app/***"),
    ("rtmpt://host/app/key", "rtmpt://host/app/***"),
    ("rtmpe://host:1935/app/key", "rtmpe://host:1935/app/***"),
    ("rtmp://u:p@host/app/key", "rtmp://***@host/app/***"),
    ("rtmp://u:pa/ss@host/app/key", "rtmp://***@host/***"),  # the '/' in the password: the app is hidden too
    ("rtmp://host/app/ke@y", "rtmp://***"),
    ("cache:rtmp://host/app/key", "cache:rtmp://host/app/***"),
    ("rtmp://host/app?token=x", "rtmp://host/app?token=***"),
    ("rtmp://host/app", "rtmp://host/app"),
    ("rtmp://host/app/", "rtmp://host/app/"),
    # control characters: percent-encoded in a URL, escaped in a path
    ("rtsp://h/x\nINFO forged", "rtsp://h/x%0AINFO forged"),
    ("rtsp://h/x\x1b[2J\x85", "rtsp://h/x%1B[2J%C2%85"),
    ("/tmp/a\nb.mp4", "/tmp/a\\nb.mp4"),
]

UNCHANGED = [
    "rtsp://127.0.0.1:8554/cam1",
    "http://example.com/a/b.m3u8?x=1&keyframe=2&keyint=3",
    "https://h/x?t=10#t=20",
    "srt://10.0.0.5:9000?mode=caller&latency=200",
    "rtmp://host/live",
    "whep+https://h/whep/cam",
    "file:///home/a@b/v.mp4",
    "FILE:///home/a@b/v.mp4?token=x",
    "/tmp/user:pw@x.mp4?token=1",
    "clips/a@b.mp4",
    "C:\\videos\\a@b.mp4",
]


@pytest.mark.parametrize(("url", "shown"), EXAMPLES)
def test_redact_url_examples(url, shown):
    assert redact_url(url) == shown
    assert redact_url(shown) == shown


@pytest.mark.parametrize("url", UNCHANGED)
def test_urls_and_paths_without_secrets_are_unchanged(url):
    assert redact_url(url) == url


def test_local_paths_are_what_ffmpeg_opens_as_files():
    assert is_local_path("/tmp/x.mp4") and is_local_path("C:\\x.mp4") and is_local_path("file:x.mp4")
    assert not is_local_path("rtsp://h/x") and not is_local_path("rtsp:h/x") and not is_local_path(" rtsp://u:p@h/x")
    assert redact_url(" rtsp://u:p@h/x") == " rtsp://***@h/x"


def test_redact_text_redacts_every_url_in_free_text():
    text = "open failed: 'rtsp://u:p@h/x' then http://h/y?token=t (and /tmp/a@b.mp4)"
    assert redact_text(text) == "open failed: 'rtsp://***@h/x' then http://h/y?token=*** (and /tmp/a@b.mp4)"


def test_escape_control():
    assert escape_control("a\nb\rc\td\x00e\x1bf\x7fg\x85h\u2028i") == "a\\nb\\rc\\td\\x00e\\x1bf\\x7fg\\x85h\\u2028i"
    assert escape_control("plain ü €") == "plain ü €"


# --- properties ---------------------------------------------------------------------

MARK = "Zq7SECRETMARK"  # in every generated secret: it must never come out
ANY = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)  # any character, controls included
PLAIN = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd"), max_codepoint=127), min_size=1, max_size=8)
HOST = st.sampled_from(["cam.local", "10.0.0.5", "[::1]", "example.com", "h"])
PORT = st.sampled_from(["", ":554", ":1935", ":8890"])
SCHEME = st.sampled_from(["rtsp", "rtsps", "http", "https", "srt", "whep+https", "udp", "tcp", "RTSP", "rtmp", "rtmps"])
SAFE_PATH = st.lists(PLAIN, max_size=3).map(lambda parts: "".join("/" + p for p in parts))
# parameters with names that do not look secret (and no '@': that would be user info)
SAFE_PARAM = st.tuples(st.sampled_from(["mode", "latency", "channel", "x", "format", "t", "keyframe"]), PLAIN).map("=".join)
SECRET_NAME = st.tuples(
    st.sampled_from(["", "x-amz-", "X-Amz-", "api_", "client_", "oauth_", "my"]),
    st.sampled_from([
        "key", "token", "secret", "password", "passwd", "pwd", "pass", "passphrase", "signature", "sig", "credential",
        "auth", "authorization", "session", "streamid", "apikey", "Security-Token", "accessToken", "streamKey",
    ]),
).map("".join).flatmap(lambda n: st.sampled_from([n, n.upper(), n.lower(), n.title()]))


@st.composite
def secret_texts(draw: st.DrawFn) -> str:
    return draw(ANY) + MARK + draw(ANY)


def assert_hidden(url: str, secret: str) -> None:
    shown = redact_url(url)
    assert MARK not in shown, f"{url!r} -> {shown!r}"
    assert secret not in shown
    assert redact_url(shown) == shown


@given(scheme=SCHEME, user=ANY, password=secret_texts(), host=HOST, port=PORT, path=SAFE_PATH,
       query=st.lists(SAFE_PARAM, max_size=3))
@example(scheme="rtsp", user="u", password="p#a?ss@/x:" + MARK, host="h", port="", path="/x", query=[])
def test_a_password_never_comes_out(scheme, user, password, host, port, path, query):
    url = f"{scheme}://{user}:{password}@{host}{port}{path}" + ("?" + "&".join(query) if query else "")
    assert_hidden(url, password)


@given(scheme=SCHEME, host=HOST, path=SAFE_PATH, before=st.lists(SAFE_PARAM, max_size=2), name=SECRET_NAME,
       value=secret_texts(), after=st.lists(SAFE_PARAM, max_size=2), sep=st.sampled_from(["?", "#"]), join=st.sampled_from("&;"))
def test_a_secret_parameter_never_comes_out(scheme, host, path, before, name, value, after, sep, join):
    # A value that itself holds "&name=" is two parameters to every parser: not generated.
    assume(not re.search(r"[?&;#][A-Za-z0-9_.~%+\-\[\]]+=", value))
    url = f"{scheme}://{host}{path}{sep}" + join.join([*before, f"{name}={value}", *after])
    assert_hidden(url, value)


@given(scheme=st.sampled_from(["rtmp", "rtmps", "rtmpt", "rtmpe", "RTMP", "cache:rtmp"]), userinfo=st.sampled_from(["", "u:p@"]),
       host=HOST, port=PORT, app=PLAIN, key=secret_texts(), query=st.sampled_from(["", "?x=1", "#f"]))
@example(scheme="rtmp", userinfo="", host="h", port="", app="live", key="a@b/" + MARK + "?c#d", query="")
def test_an_rtmp_stream_key_never_comes_out(scheme, userinfo, host, port, app, key, query):
    assert_hidden(f"{scheme}://{userinfo}{host}{port}/{app}/{key}{query}", key)


@given(scheme=SCHEME.filter(lambda s: not s.lower().startswith("rtmp")), host=HOST, port=PORT, path=SAFE_PATH,
       query=st.lists(SAFE_PARAM, max_size=4), fragment=st.sampled_from(["", "#t=10", "#top"]))
def test_a_url_without_secrets_is_unchanged(scheme, host, port, path, query, fragment):
    url = f"{scheme}://{host}{port}{path}" + ("?" + "&".join(query) if query else "") + fragment
    assert redact_url(url) == url


@given(text=st.text())
def test_any_text_is_redacted_without_error_idempotently_and_without_controls(text):
    shown = redact_url(text)
    assert redact_url(shown) == shown
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", shown)
    assert len(shown.splitlines()) <= 1


# URL syntax in any order: the delimiters, secret names, nested schemes, controls, masks.
URL_PIECES = st.lists(st.sampled_from([
    "rtmp:", "rtsp:", "cache:", "//", "/", "@", "?", "#", "&", ";", "=", ":", "%", "token", "key", "a", "b", "x=",
    "\n", " ", MASK,
]), max_size=25).map("".join)


@given(text=URL_PIECES)
def test_url_syntax_in_any_order_is_redacted_idempotently(text):
    shown = redact_url(text)
    assert redact_url(shown) == shown


@given(text=st.text())
def test_any_text_in_a_log_line_stays_one_line(text):
    line = safe_line(text)
    assert len(line.splitlines()) <= 1 and safe_line(line) == line


@given(url=st.builds("{}://{}".format, SCHEME, st.text()))
def test_any_url_shaped_text_is_redacted_idempotently(url):
    shown = redact_url(url)
    assert redact_url(shown) == shown
    assert shown.startswith(url.split("://", 1)[0] + "://")


# --- logs ---------------------------------------------------------------------------


def formatted(record_args: tuple, msg: str = "stream %s: cannot open %s", exc: BaseException | None = None) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test_redact.logs")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        if exc is None:
            logger.warning(msg, *record_args)
        else:
            try:
                raise exc
            except type(exc):
                logger.exception(msg, *record_args)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_a_newline_in_a_logged_url_cannot_forge_a_record():
    text = formatted(("cam1\nERROR streamguard: forged", "rtsp://u:hunter2@h/x\r\nINFO forged"))
    assert text == "WARNING test_redact.logs: stream cam1\\nERROR streamguard: forged: cannot open rtsp://***@h/x\\r\\nINFO forged\n"
    assert len(text.splitlines()) == 1


def test_a_traceback_keeps_its_lines_but_none_passes_for_a_record():
    text = formatted(("cam1", "x"), exc=ValueError("bad rtsp://u:hunter2@h/x\nERROR streamguard: forged\x1b[2J"))
    first, *rest = text.splitlines()
    assert first == "ERROR test_redact.logs: stream cam1: cannot open x"
    assert rest[0] == "    Traceback (most recent call last):"
    assert rest[-2:] == ["    ValueError: bad rtsp://***@h/x", "    ERROR streamguard: forged\\x1b[2J"]
    assert all(line.startswith("    ") for line in rest)
    assert "hunter2" not in text and "\x1b" not in text


def test_a_malformed_stream_argument_is_reported_redacted():
    with pytest.raises(ConfigError) as err:
        parse_stream_arg("rtsp://admin:hunter2@cam/x")  # NAME= forgotten
    assert str(err.value) == "--stream expects NAME=URL, got 'rtsp://***@cam/x'"

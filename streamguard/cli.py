"""The `streamguard` command: run on live streams, or a self-contained demo.

User errors (bad config, missing checkpoint, unreachable stream) print one line,
`streamguard: error: ...`, and exit non-zero without a traceback. Exit codes:
0 ok, 2 bad input before start, 3 one or more streams failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import secrets
import signal
import sys
import urllib.parse
from importlib.metadata import entry_points
from collections.abc import Callable
from pathlib import Path
from typing import Any

# mediapipe/TFLite log through glog/absl; keep their start-up chatter off the console.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from streamguard.blas import limit_numpy_blas_threads  # noqa: E402
from streamguard.commandline import (  # noqa: E402
    EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_STREAM_FAILED, add_pipeline_options, check_sources, pipeline_overrides,
)
from pydantic import ValidationError  # noqa: E402

from streamguard.config import (  # noqa: E402
    Config, ConnectorsConfig, JanusConfig, StreamConfig, format_validation_error, load_config, parse_stream_arg,
)
from streamguard.errors import ConfigError, StreamguardError  # noqa: E402
from streamguard.server.exposure import check_exposure  # noqa: E402
from streamguard.logsafe import configure_logging, safe_line  # noqa: E402
from streamguard.supervisor import READY_FILE_ENV, supervise  # noqa: E402

log = logging.getLogger("streamguard")

# Modules that add subcommands: each has `register(subparsers)`; keeps this file small.
COMMAND_MODULES: tuple[str, ...] = ("streamguard.report.commands", "streamguard.redis.commands", "streamguard.inference.commands")
# Installed packages add subcommands the same way through this entry point group (the lab's `bench`).
COMMAND_ENTRY_POINTS = "streamguard.commands"
DEMO_SECONDS = 60.0  # long enough to open the console and watch the faces alert
DEMO_VIDEO = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamguard" / f"two_faces_{DEMO_SECONDS:.0f}s.mp4"
DEMO_HTTP = "127.0.0.1:8080"


def _check_duration(args: argparse.Namespace) -> None:
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {args.duration}")


async def serve(cfg: Config, duration: float | None, on_event: Callable[[Any], None] | None = None,
                on_ready: Callable[[str], None] | None = None) -> int:
    """Run the pipeline into Redis until stopped, `duration` passes or (without --http) every stream ends;
    return the exit code. `on_ready` gets the HTTP server's URL once it listens."""
    from streamguard.app import running
    from streamguard.redact import redact_url
    from streamguard.redis.embedded import EmbeddedRedis
    from streamguard.redis.sink import RedisSink
    from streamguard.redis.subscriber import ChannelSubscriber

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    embedded: EmbeddedRedis | None = None
    subscriber: ChannelSubscriber | None = None
    try:
        url = cfg.redis.url
        if url is None:
            embedded = EmbeddedRedis().start()
            url = embedded.url
            log.info("no --redis-url: started an embedded redis-server at %s", url)
        sink = RedisSink(cfg.redis, url)
        if on_event:
            subscriber = ChannelSubscriber(url, cfg.redis.channel, on_event)
            await subscriber.start()
        log.info(
            "analysing %d stream(s): %s; events on channel %s and stream %s at %s",
            len(cfg.streams),
            ", ".join(f"{s.name}={redact_url(s.url)}" for s in cfg.streams),
            cfg.redis.channel,
            cfg.redis.stream_key,
            redact_url(url),
        )
        async with running(cfg, sink) as app:
            if ready := os.environ.get(READY_FILE_ENV):  # a supervisor (run --processes) waits for this
                _write_whole(Path(ready), app.server.url if app.server else "")
            if on_ready is not None and app.server is not None:
                on_ready(app.server.url)
            # With the API on or a connector, streams come and go: keep running with none until stopped.
            await app.pipeline.wait(stop, duration, until_idle=app.server is None and not app.watches)
        if subscriber:
            await subscriber.drain(expected=sink.published, timeout=5.0)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if subscriber:
            await subscriber.close()
        if embedded:
            embedded.close()
    for r in app.reports:
        status = f"FAILED: {r.error}" if r.error else "ok"
        log.info(
            "stream %s: %d frames analysed, %d dropped, %d faces, %d events; %s",
            r.name, r.frames_analysed, r.frames_dropped, r.faces, r.events, status,
        )
    log.info("events: %d published, %d dropped", sink.published, sink.dropped)
    failed = [r for r in app.reports if r.error]
    if failed:
        log.error("%d of %d stream(s) failed", len(failed), len(app.reports))
        return EXIT_STREAM_FAILED
    return 0


def _write_whole(path: Path, text: str) -> None:
    """Write `text` so that a reader sees the file whole or not at all."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def cmd_run(args: argparse.Namespace) -> int:
    from streamguard.ingest.hwaccel import require_decoding  # PyAV: only for the commands that decode

    _check_duration(args)
    cfg = load_config(args.config, pipeline_overrides(args))
    check_exposure(cfg.http)  # an open bind refuses to start here, before the engine loads or anything binds
    streams = cfg.streams + [parse_stream_arg(s) for s in args.stream or []]
    cfg = with_janus_args(cfg, args.janus or [])
    if not streams and cfg.http.bind is None and not cfg.connectors.janus:
        raise ConfigError(
            "no streams: pass --stream NAME=URL (repeatable), list streams in the config, add them through --http, "
            "or watch a call server with --janus URL"
        )
    cfg = cfg.model_copy(update={"streams": Config.model_validate({"streams": [s.model_dump() for s in streams]}).streams})
    check_sources(cfg, cfg.streams)
    require_decoding(cfg.ingest)  # before any worker, Redis or the model starts
    if args.ray is not None:  # a bare --ray: $RAY_ADDRESS, else the cluster on this machine
        ray_address = args.ray or os.environ.get("RAY_ADDRESS") or "auto"
        from streamguard.cluster.driver import run_on_ray  # imports ray: only here

        if args.processes != 1:
            raise ConfigError("--ray and --processes do not go together: on a cluster, cluster.shards sets how many")
        return asyncio.run(run_on_ray(cfg, ray_address, args.duration))
    if args.processes != 1 and cfg.connectors.janus:
        raise ConfigError("--janus runs in one process: leave out --processes (a connector's streams stay in its process)")
    if args.processes != 1:
        return asyncio.run(supervise(cfg, args.processes, args.duration, args.log_level))
    return asyncio.run(serve(cfg, args.duration))


def with_janus_args(cfg: Config, urls: list[str]) -> Config:
    """`cfg` with a Janus connector per `--janus URL` not already in its `connectors.janus`, watching
    every room (named janus, janus2, ...); rooms, PINs and secrets are set there, in the config."""
    if not urls:
        return cfg
    servers = list(cfg.connectors.janus)
    taken = {s.name for s in servers}
    for url in dict.fromkeys(u for u in urls if u not in {s.url for s in servers}):
        name = next(n for n in (f"janus{i}" if i > 1 else "janus" for i in range(1, len(taken) + 2)) if n not in taken)
        taken.add(name)
        try:
            servers.append(JanusConfig(url=url, name=name))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, "--janus")) from None
    try:
        connectors = ConnectorsConfig(janus=servers)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "--janus")) from None
    return cfg.model_copy(update={"connectors": connectors})


def cmd_demo(args: argparse.Namespace) -> int:
    from streamguard.app import UNTRAINED_WARNING
    from streamguard.redis.subscriber import format_event
    from streamguard.samples import make_two_face_video

    _check_duration(args)
    overrides = pipeline_overrides(args)
    untrained = args.checkpoint is None and not os.environ.get("STREAMGUARD_CHECKPOINT")
    if untrained:
        # Untrained weights: show the wiring. Every tracked face alerts at threshold 0.
        overrides["model.arch"] = overrides["model.arch"] or "small"
        if args.threshold is None:
            overrides["scoring.threshold"] = 0.0
    cfg = load_config(args.config, overrides)
    video = args.video
    if video is None:
        video = DEMO_VIDEO
        if not video.is_file():
            log.info("generating the sample video (two real faces, H.264) at %s", video)
            make_two_face_video(video, seconds=DEMO_SECONDS)
    cfg.ingest.realtime = True
    if cfg.http.bind is None:
        cfg.http.bind = DEMO_HTTP  # the console; loopback only
    if cfg.http.token is None:
        cfg.http.token = secrets.token_urlsafe(16)  # the URL printed below carries it, in its fragment
    cfg = cfg.model_copy(update={"streams": [StreamConfig(name="demo", url=str(video))]})
    check_sources(cfg, cfg.streams)
    if untrained:
        print(
            f"\n*** DEMO WITH AN UNTRAINED MODEL ***\n{UNTRAINED_WARNING}\n"
            f"The threshold is {cfg.scoring.threshold} so that every tracked face alerts: this shows the wiring "
            "(video -> faces -> model -> window -> Redis), not a detection.\n",
            flush=True,
        )
    print(f"playing {video} as a live stream; alerts from Redis channel {cfg.redis.channel}:", flush=True)
    token = cfg.http.token

    def console_ready(url: str) -> None:
        # The token rides in the fragment, which the browser never sends: the page keeps it for the tab.
        print(f"\nconsole: {url}/#token={urllib.parse.quote(token or '')}\n(open it in a browser on this machine; "
              f"Ctrl-C{'' if args.duration is None else ' or --duration'} stops the demo)\n", flush=True)

    return asyncio.run(serve(cfg, args.duration, on_event=lambda e: print(format_event(e), flush=True),
                             on_ready=console_ready))


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line; a command another package adds (COMMAND_ENTRY_POINTS) is imported only when
    `argv` asks for it, so `run` never loads the lab's code."""
    parser = argparse.ArgumentParser(prog="streamguard", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="analyse live streams and publish alerts to Redis")
    run.add_argument("--stream", action="append", metavar="NAME=URL", help="a stream to analyse (repeatable)")
    run.add_argument("--janus", action="append", metavar="URL",
                     help="analyse every publisher of a Janus VideoRoom server (its HTTP API, e.g. http://sfu:8088/janus; "
                     "repeatable), in every room; to choose rooms or give PINs and secrets, list it under "
                     "connectors.janus in the config instead")
    run.add_argument("--processes", type=int, default=1, metavar="N",
                     help="split the streams across N worker processes, each with its own engine (one process "
                     "carries some 16-32 streams: its GIL); restarted if one dies. --http then serves one API for all")
    run.add_argument("--ray", metavar="ADDRESS", nargs="?", const="", default=None,
                     help="run the streams on shard actors of the Ray cluster at ADDRESS (auto: the one on this machine; "
                     "no value: $RAY_ADDRESS, else auto), with failover; the same API through one front door")
    add_pipeline_options(run)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="embedded Redis + a generated two-face video played live; prints alerts and "
                          f"the console's address (--http, default {DEMO_HTTP})")
    demo.add_argument("--video", type=Path, help="play this file instead of the generated sample")
    add_pipeline_options(demo)
    demo.set_defaults(func=cmd_demo)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    chosen = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    for entry in entry_points(group=COMMAND_ENTRY_POINTS):
        if entry.name == chosen:
            entry.load()(sub)  # adds the parser named entry.name, with its options
        else:
            sub.add_parser(entry.name, help=f"(from {entry.value.partition(':')[0]}; see `streamguard {entry.name} -h`)")
    return parser


def run_command(prog: str, args: argparse.Namespace) -> int:
    """Run a parsed subcommand: user errors become one line and exit 2 (shared by streamguard-train)."""
    configure_logging(getattr(args, "log_level", "INFO"))  # one line per record, URLs redacted: logsafe.py
    limit_numpy_blas_threads()
    try:
        return args.func(args)
    except StreamguardError as err:
        print(f"{prog}: error: {safe_line(str(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    return run_command("streamguard", build_parser(argv).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

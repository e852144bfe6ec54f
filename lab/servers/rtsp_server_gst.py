"""A real RTSP server for tests and benchmarks: serves H.264 mp4 files as rtsp://127.0.0.1:PORT/NAME.

Run with the SYSTEM python (GStreamer's bindings are a Debian package, not in the venv):

    /usr/bin/python3 lab/servers/rtsp_server_gst.py --port 8554 [--loop] cam1=/path/a.mp4 cam2=/path/b.mp4

Prints "READY <port>" once listening (port 0 picks a free one) and exits cleanly on
SIGTERM or SIGINT, which closes every client's connection.

Each file's H.264 access units are read into memory once, and every client gets its
own pipeline (not shared) that starts at the first keyframe, so a client's first
frame comes as soon as it connects instead of at the next keyframe of a stream
already running. The pipeline pushes the access units through an appsrc with
timestamps continuing across passes, so with --loop a stream never ends (a
`filesrc ! qtdemux` pipeline cannot loop without restarting the timeline); without
it, the stream ends after one pass, as a camera going away would. Timing comes
from the server's sinks, which play the timestamps at real time.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402

LAUNCH = "( appsrc name=src format=time ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"


@dataclass(frozen=True)
class Clip:
    """One file's H.264 access units, in decoding order, with its caps and length."""

    caps: Gst.Caps
    units: list[tuple[int, int, int, bool, bytes]]  # pts, dts, duration (ns), keyframe, data
    duration: int  # ns, from the first unit's pts to the end of the last


def load_clip(path: str) -> Clip:
    """Demux an mp4 into memory; fails if it has no H.264 video."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! qtdemux ! h264parse ! '
        "video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    units = []
    caps = None
    error = None
    while error is None and not sink.is_eos():
        sample = sink.try_pull_sample(100 * Gst.MSECOND)
        if sample is None:  # the end, an error, or just a slow disk
            error = bus.pop_filtered(Gst.MessageType.ERROR)
            continue
        buf = sample.get_buffer()
        caps = sample.get_caps()
        ok, info = buf.map(Gst.MapFlags.READ)
        assert ok
        keyframe = not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)
        dts = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts
        units.append((buf.pts, dts, buf.duration, keyframe, bytes(info.data)))
        buf.unmap(info)
    pipeline.set_state(Gst.State.NULL)
    if error is not None or not units:
        detail = error.parse_error()[0].message if error is not None else "no H.264 video"
        sys.exit(f"rtsp_server: cannot read {path}: {detail}")
    start = min(u[0] for u in units)
    end = max(u[0] + u[2] for u in units)
    return Clip(caps, units, end - start)


class ClipFactory(GstRtspServer.RTSPMediaFactory):
    """Gives each client its own appsrc pipeline playing `clip` (looping if asked)."""

    def __init__(self, clip: Clip, loop: bool) -> None:
        super().__init__()
        self.clip = clip
        self.loop = loop
        self.set_launch(LAUNCH)
        self.set_shared(False)
        self.connect("media-configure", self._configure)

    def _configure(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_child_by_name("src")
        src.set_property("caps", self.clip.caps)
        src.connect("need-data", self._need_data, {"next": 0})

    def _need_data(self, src: GstApp.AppSrc, _length: int, position: dict[str, int]) -> None:
        units = self.clip.units
        index = position["next"]
        passes, i = divmod(index, len(units))
        if passes > 0 and not self.loop:
            src.emit("end-of-stream")
            return
        pts, dts, duration, keyframe, data = units[i]
        offset = passes * self.clip.duration
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts, buf.dts, buf.duration = pts + offset, dts + offset, duration
        if not keyframe:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        position["next"] = index + 1
        src.emit("push-buffer", buf)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--loop", action="store_true", help="loop each file forever instead of ending the stream")
    parser.add_argument("mounts", nargs="+", metavar="NAME=FILE.mp4")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for mount in args.mounts:
        name, sep, path = mount.partition("=")
        if not sep or not name or not path:
            parser.error(f"expected NAME=FILE.mp4, got {mount!r}")
        mounts.add_factory(f"/{name}", ClipFactory(load_clip(path), args.loop))
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}")

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"READY {server.get_bound_port()}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()

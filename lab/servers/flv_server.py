"""A live-stream server for machines without GStreamer: serves H.264 mp4 files as FLV over TCP.

The RTSP server (`rtsp_server_gst.py`) needs GStreamer's Debian packages, which the GPU
host lacks and cannot install (nothing can be fetched there); this needs only PyAV,
which travels as a wheel. FLV is RTMP's container: every frame is a length-prefixed tag,
so no format adds a frame of look-ahead, and FFmpeg (so `StreamSource`) reads
tcp://127.0.0.1:PORT like any URL.

    python -m lab.servers.flv_server [--loop] [--port cam1=PORT] cam1=/path/a.mp4 cam2=/path/b.mp4

Each file gets a listening port of its own (raw TCP has no path to pick a file by):
the one `--port` names (so a restarted server keeps its URLs), else any free one.
Prints "READY cam1=PORT1 cam2=PORT2" once all listen, and exits on SIGTERM or SIGINT,
which closes every client's connection.

As with the RTSP server, each file's packets are read into memory once, and every client
gets its own thread that plays them from the first one (a keyframe), so a client's first
frame comes as soon as it connects; packets leave at their decoding time, paced by the
wall clock, with timestamps continuing across passes under --loop, so a stream never
ends; without it, the stream ends after one pass, as a camera going away would.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from types import FrameType

import av


@dataclass(frozen=True)
class Clip:
    """One file's H.264 packets, in decoding order, with what a muxer needs to write them."""

    path: str
    time_base: Fraction
    packets: list[tuple[int, int, bool, bytes]]  # pts, dts (time_base units), keyframe, data
    duration: int  # time_base units, from the first packet's dts to the end of the last


def load_clip(path: str) -> Clip:
    """Demux an mp4 into memory; fails if it has no H.264 video."""
    try:
        with av.open(path) as src:
            if not src.streams.video or src.streams.video[0].codec_context.name != "h264":
                sys.exit(f"flv_server: {path}: no H.264 video")
            video = src.streams.video[0]
            packets = [(p.pts, p.dts, p.is_keyframe, bytes(p)) for p in src.demux(video) if p.size]
            time_base = video.time_base
    except av.FFmpegError as e:
        sys.exit(f"flv_server: cannot read {path}: {e}")
    if not packets:
        sys.exit(f"flv_server: {path}: no packets")
    step = packets[1][1] - packets[0][1] if len(packets) > 1 else 1  # one frame's duration
    return Clip(path, time_base, packets, packets[-1][1] - packets[0][1] + step)


class SocketFile:
    """The file object PyAV's FLV muxer writes to: a connected socket."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def write(self, data: bytes) -> int:
        self.conn.sendall(data)
        return len(data)


def play(clip: Clip, conn: socket.socket, loop: bool, stop: threading.Event) -> None:
    """Send `clip` to one client in real time until it hangs up, the clip ends (no `loop`) or `stop`."""
    first_dts = clip.packets[0][1]
    try:
        with av.open(clip.path) as src:  # the template for the FLV stream's codec parameters
            # no_duration_filesize: the FLV trailer must not seek back (a socket cannot)
            out = av.open(SocketFile(conn), "w", format="flv",
                          options={"flush_packets": "1", "flvflags": "no_duration_filesize"})
            stream = out.add_stream_from_template(src.streams.video[0])
        start = time.monotonic() + 0.05
        index = 0
        while not stop.is_set():
            passes, i = divmod(index, len(clip.packets))
            if passes > 0 and not loop:
                break
            pts, dts, key, data = clip.packets[i]
            offset = passes * clip.duration
            wait = start + float((dts - first_dts + offset) * clip.time_base) - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            packet = av.Packet(data)
            packet.pts, packet.dts = pts + offset, dts + offset
            packet.time_base, packet.stream, packet.is_keyframe = clip.time_base, stream, key
            out.mux(packet)
            index += 1
        out.close()
    except (OSError, av.FFmpegError):  # the client hung up
        pass
    finally:
        conn.close()


def serve(clip: Clip, server: socket.socket, loop: bool, stop: threading.Event) -> None:
    """Accept clients on `server` until `stop`, each played by a thread of its own."""
    players: list[threading.Thread] = []
    server.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        except OSError:
            break
        conn.settimeout(None)
        player = threading.Thread(target=play, args=(clip, conn, loop, stop), daemon=True)
        player.start()
        players = [p for p in players if p.is_alive()] + [player]
    for player in players:
        player.join(timeout=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", action="store_true", help="loop each file forever instead of ending the stream")
    parser.add_argument("--port", action="append", default=[], metavar="NAME=PORT", help="a stream's port (default: any free one)")
    parser.add_argument("mounts", nargs="+", metavar="NAME=FILE.mp4")
    args = parser.parse_args()
    ports = {name: int(port) for name, _, port in (p.partition("=") for p in args.port)}

    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    servers: list[tuple[str, socket.socket, Clip]] = []
    for mount in args.mounts:
        name, sep, path = mount.partition("=")
        if not sep or not name or not path:
            parser.error(f"expected NAME=FILE.mp4, got {mount!r}")
        try:
            server = socket.create_server(("127.0.0.1", ports.get(name, 0)))
        except OSError as e:
            sys.exit(f"flv_server: cannot listen on 127.0.0.1:{ports.get(name, 0)} for {name}: {e}")
        servers.append((name, server, load_clip(path)))
    acceptors = [threading.Thread(target=serve, args=(clip, server, args.loop, stop), daemon=True)
                 for _, server, clip in servers]
    for acceptor in acceptors:
        acceptor.start()
    print("READY " + " ".join(f"{name}={server.getsockname()[1]}" for name, server, _ in servers), flush=True)
    while not stop.wait(0.5):
        pass
    for acceptor in acceptors:
        acceptor.join(timeout=3)
    for _, server, _ in servers:
        server.close()


if __name__ == "__main__":
    main()

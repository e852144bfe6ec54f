"""A stream's live picture for the console: its latest analysed frame with the faces boxed.

Pictures cost nothing when nobody watches: a stream's worker keeps no frame for us
until a viewer asks for its picture (`picture` puts a tap on the worker, the pipeline's
`StreamWorker.observer`); the tap holds only a reference to the newest frame and its
faces. The picture is drawn on request, at most once per `snapshot_interval_s` per
stream however many viewers ask (they share the cached JPEG), and never twice for the
same frame, in a thread, off the event loop. A stream nobody asked about for `watch_idle_s` loses its tap (the reaper
task, owned here, started and closed with the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import cv2
import numpy as np

from streamguard import metrics
from streamguard.config import ConsoleConfig
from streamguard.pipeline import StreamWorker
from streamguard.thumbnails import downscale
from streamguard.types import Face, Frame

ALERT_RGB = (235, 64, 52)  # at or above the threshold
CLEAR_RGB = (46, 204, 113)  # below it
UNSCORED_RGB = (200, 200, 200)  # not scored yet


@dataclass
class Picture:
    jpeg: bytes
    faces: int
    drawn_at: float  # monotonic
    frame_ts: float  # unix seconds the frame arrived
    frame: Frame  # what was drawn: the same frame with the same faces is not drawn again
    faces_drawn: list[Face]


class Tap:
    """The worker's observer: remembers the newest analysed frame and its faces (a reference, no copy)."""

    def __init__(self) -> None:
        self.frame: Frame | None = None
        self.faces: list[Face] = []
        self.asked = time.monotonic()

    def __call__(self, frame: Frame, faces: list[Face]) -> None:
        self.frame, self.faces = frame, faces


def timed_draw(*args: object) -> tuple[bytes, float]:
    """`draw`, and the CPU seconds it took in this thread (for streamguard_console_snapshot_cpu_seconds)."""
    started = time.thread_time()
    jpeg = draw(*args)  # type: ignore[arg-type]
    return jpeg, time.thread_time() - started


def draw(frame: Frame, faces: list[Face], scores: dict[int, float], threshold: float, width: int, quality: int) -> bytes:
    """The frame downscaled to `width`, each face boxed and labelled `#track score`, coloured against `threshold`."""
    rgb = downscale(frame.rgb, width)
    scale = rgb.shape[1] / frame.size[0]
    image = np.ascontiguousarray(rgb) if rgb is not frame.rgb else rgb.copy()
    thick = max(2, round(image.shape[1] / 320))
    for face in faces:
        score = scores.get(face.track)
        colour = UNSCORED_RGB if score is None else ALERT_RGB if score >= threshold else CLEAR_RGB
        x0, y0, x1, y1 = (int(round(float(v) * scale)) for v in face.box)
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, thick)
        label = f"#{face.track}" + ("" if score is None else f" {score:.2f}")
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        top = max(0, y0 - th - base - 4)
        cv2.rectangle(image, (x0, top), (x0 + tw + 6, top + th + base + 4), colour, -1)
        cv2.putText(image, label, (x0 + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class Snapshots:
    def __init__(self, cfg: ConsoleConfig) -> None:
        self.cfg = cfg
        self._taps: dict[str, tuple[StreamWorker, Tap]] = {}
        self._cache: dict[str, Picture] = {}
        self._drawing: dict[str, asyncio.Future[Picture | None]] = {}
        self._reaper: asyncio.Task[None] | None = None

    @property
    def watched(self) -> list[str]:
        return sorted(self._taps)

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap(), name="console-snapshots-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        for drawing in list(self._drawing.values()):
            with contextlib.suppress(BaseException):
                await drawing
        for name in list(self._taps):
            self._untap(name)

    async def picture(self, worker: StreamWorker) -> Picture | None:
        """The stream's picture (None until a frame was analysed since the first ask); starts watching it."""
        name = worker.stream.name
        tapped = self._taps.get(name)
        if tapped is None or tapped[0] is not worker:  # first ask, or a new worker under the same name
            self._untap(name)
            tapped = (worker, Tap())
            worker.observer = tapped[1]
            self._taps[name] = tapped
            metrics.CONSOLE_WATCHED.set(len(self._taps))
        tap = tapped[1]
        tap.asked = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and (
            tap.asked - cached.drawn_at < self.cfg.snapshot_interval_s
            or (cached.frame is tap.frame and cached.faces_drawn is tap.faces)
        ):
            return cached
        if name not in self._drawing:  # viewers asking at once share one drawing
            self._drawing[name] = asyncio.ensure_future(self._draw(name, worker, tap))
        drawing = self._drawing[name]
        try:
            return await asyncio.shield(drawing)
        finally:
            if drawing.done() and self._drawing.get(name) is drawing:
                del self._drawing[name]

    async def _draw(self, name: str, worker: StreamWorker, tap: Tap) -> Picture | None:
        frame, faces = tap.frame, tap.faces
        if frame is None:
            return None
        now = time.time()
        scores = {i.track: i.score for i in worker.scorer.scores(now).identities}
        jpeg, cpu = await asyncio.to_thread(
            timed_draw, frame, faces, scores, worker.scorer.threshold, self.cfg.snapshot_width, self.cfg.jpeg_quality
        )
        metrics.CONSOLE_SNAPSHOTS.inc()
        metrics.CONSOLE_SNAPSHOT_CPU.observe(cpu)
        picture = Picture(jpeg, len(faces), time.monotonic(), frame.wall_ts, frame, faces)
        self._cache[name] = picture
        return picture

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.cfg.watch_idle_s / 2))
            now = time.monotonic()
            for name, (_, tap) in list(self._taps.items()):
                if now - tap.asked > self.cfg.watch_idle_s and name not in self._drawing:
                    self._untap(name)

    def _untap(self, name: str) -> None:
        tapped = self._taps.pop(name, None)
        self._cache.pop(name, None)
        if tapped is not None and tapped[0].observer is tapped[1]:
            tapped[0].observer = None
        metrics.CONSOLE_WATCHED.set(len(self._taps))

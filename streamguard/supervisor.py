"""`streamguard run --processes N`: one host's streams split across N worker processes.

Why: one Python process carries only so many streams, however many cores it has: its
GIL does. On the H200 host 16 two-face 1080p streams ran at the full 5 analysed fps in
one process, 32 at 83% of it, and 64 collapsed to 0.5-1.25 fps with 14 of 16 cores
idle (docs/benchmarks.md), while the GPU's model could serve hundreds. Each worker is a
plain `streamguard run` on its share of the streams (round-robin), with its own engine
(on a GPU they share the device) and the same Redis, so alerts look the same whichever
worker found them. With `--http HOST:PORT` the supervisor serves one front door there
(server/front_door.py) and each worker its API on a loopback port of its own.

Lifetimes: the supervisor owns its workers. It starts the first one alone and the rest
once the first is ready (its engine open, so an int8 engine is built once and the
models do not all load at once), forwards SIGINT/SIGTERM to all, and waits for them.
A worker that dies (a signal, a crash) is started again after a back-off (1 s doubling
to 30 s, reset after a minute of running); one that ends by itself (its streams ended,
`--duration`, or bad input: exit 2 or 3) is not. Each worker's log lines come out with
its number in front. A worker is ready once its pipeline runs and its API listens: it
writes that API's URL (or nothing, without --http) to a file the supervisor names.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml

from streamguard.aio import first_of
from streamguard.config import Config, StreamConfig
from streamguard.errors import ConfigError
from streamguard.logsafe import safe_line

log = logging.getLogger(__name__)

READY_FILE_ENV = "STREAMGUARD_READY_FILE"  # a worker writes its API's URL (or "") here once it runs
WORKER_BIND = "127.0.0.1:0"  # behind the front door: loopback, a port the OS picks
READY_TIMEOUT_S = 600.0  # the first worker's engine may be built (export + quantize) before it is ready
STOP_GRACE_S = 20.0  # after SIGTERM, how long a worker may take to publish what it holds and exit
BACKOFF_S = (1.0, 30.0)  # a restarted worker's first and longest wait
STEADY_S = 60.0  # a worker that ran this long starts its next back-off from the first wait again
NO_RESTART = (0, 2, 3)  # done, bad input, streams failed: starting again would end the same way


def shares(streams: list[StreamConfig], processes: int, allow_empty: bool = False) -> list[list[StreamConfig]]:
    """`streams` dealt round-robin to `processes` workers; without `allow_empty` (streams only
    from the config: no API to add more) to no more workers than there are streams."""
    if processes < 1:
        raise ConfigError(f"--processes must be >= 1, got {processes}")
    n = processes if allow_empty else min(processes, len(streams))
    return [streams[i::n] for i in range(n)]


class Worker:
    """One `streamguard run` child on a share of the streams; restarted by `run` if it dies."""

    def __init__(self, index: int, config_path: Path, ready_path: Path, args: list[str],
                 on_ready: Callable[[int, str], Awaitable[None]] | None = None, on_exit: Callable[[int], None] | None = None) -> None:
        self.index = index
        self.config_path = config_path
        self.ready_path = ready_path
        self.args = args  # after `run --config FILE`: --log-level, --duration
        self.on_ready = on_ready  # called with (index, API URL) each time a start gets ready
        self.on_exit = on_exit  # called with the index each time the process exits
        self.proc: asyncio.subprocess.Process | None = None
        self.ready = asyncio.Event()  # set while the current start is ready
        self.restarts = 0
        self.returncode: int | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        env = dict(os.environ, **{READY_FILE_ENV: str(self.ready_path)})
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamguard.cli", "run", "--config", str(self.config_path), *self.args,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        log.info("worker %d started (pid %d)", self.index, self.proc.pid)

    async def wait_ready(self, timeout: float, stopping: asyncio.Event) -> bool:
        """True once the worker's pipeline runs; False if it exited first, `stopping` was set or `timeout` passed."""
        assert self.proc is not None
        await first_of(self.ready.wait(), self.proc.wait(), stopping.wait(), timeout=timeout)
        return self.ready.is_set()

    async def _watch_ready(self) -> None:
        """Wait for this start's ready file (polled: nothing else signals it), then say so."""
        while not self.ready_path.exists():
            await asyncio.sleep(0.1)
        url = self.ready_path.read_text().strip()  # written whole (os.replace), never half
        self.ready.set()
        if self.on_ready is not None and url:
            await self.on_ready(self.index, url)

    async def run(self) -> int:
        """Run (the first start is the caller's) until the worker ends by itself or is stopped; its exit code."""
        backoff = BACKOFF_S[0]
        while True:
            assert self.proc is not None
            started = time.monotonic()
            watch = asyncio.create_task(self._watch_ready(), name=f"worker-{self.index}-ready")
            try:
                code = await self._relay_and_wait(self.proc)
            finally:
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
                self.ready.clear()
                self.ready_path.unlink(missing_ok=True)
                if self.on_exit is not None:
                    self.on_exit(self.index)
            if self._stopping.is_set() or code in NO_RESTART:
                self.returncode = code
                return code
            if time.monotonic() - started >= STEADY_S:
                backoff = BACKOFF_S[0]
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            log.error("worker %d died (%s); starting it again in %.0f s", self.index, how, backoff)
            try:
                await asyncio.wait_for(self._stopping.wait(), backoff)
                self.returncode = code  # stopped while waiting to start again
                return code
            except TimeoutError:
                pass
            backoff = min(2 * backoff, BACKOFF_S[1])
            self.restarts += 1
            await self.start()

    def stop(self) -> None:
        """Ask the worker to finish (SIGTERM); `run` then returns once it has."""
        self._stopping.set()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()

    async def _relay_and_wait(self, proc: asyncio.subprocess.Process) -> int:
        """Copy the worker's output to ours, each line tagged with its number, until it exits.

        Its log records are safe lines already (logsafe.py); whatever else it prints (FFmpeg's
        own stderr) is made safe here too: URLs redacted, control characters escaped."""
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = safe_line(line.decode(errors="replace").rstrip("\r\n"))
            sys.stderr.write(f"[worker {self.index}] {text}\n")
        return await proc.wait()


def worker_config(cfg: Config, streams: list[StreamConfig], bind: str | None = None) -> dict:
    """The config a worker runs: this one with its share of the streams and its HTTP address (a plain dict, for YAML).
    Behind the front door a worker serves plain HTTP on loopback with no rate limit: TLS and the per-client
    rate are the front door's (every request a worker sees comes from it)."""
    http = cfg.http.model_copy(update={"bind": bind, "tls_cert": None, "tls_key": None, "rate_per_client": 0.0})
    return cfg.model_copy(update={"streams": streams, "http": http}).model_dump(mode="json")


async def supervise(cfg: Config, processes: int, duration: float | None, log_level: str) -> int:
    """Run the streams of `cfg` in `processes` workers until all end or we are stopped; the worst exit code."""
    from streamguard.redis.embedded import EmbeddedRedis
    from streamguard.server.front_door import FrontDoor

    groups = shares(cfg.streams, processes, allow_empty=cfg.http.bind is not None)
    front = FrontDoor(cfg.http, len(groups)) if cfg.http.bind is not None else None
    bind = WORKER_BIND if front is not None else None
    embedded: EmbeddedRedis | None = None
    if cfg.redis.url is None:  # one Redis for all workers, as a lone process would have started for itself
        embedded = EmbeddedRedis().start()
        cfg = cfg.model_copy(update={"redis": cfg.redis.model_copy(update={"url": embedded.url})})
        log.info("no --redis-url: started an embedded redis-server at %s for the workers", embedded.url)
    args = ["--log-level", log_level, *(["--duration", str(duration)] if duration is not None else [])]
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    runs: list[asyncio.Task[int]] = []
    workers: list[Worker] = []
    try:
        if front is not None:
            await front.start()  # an address in use fails here, before any worker starts
        with tempfile.TemporaryDirectory(prefix="streamguard-workers-") as folder:  # 0700: configs may hold secrets
            on_ready, on_exit = (front.worker_up, front.worker_down) if front is not None else (None, None)
            for i, group in enumerate(groups):
                path = Path(folder) / f"worker{i}.yaml"
                path.write_text(yaml.safe_dump(worker_config(cfg, group, bind), sort_keys=False))
                workers.append(Worker(i, path, Path(folder) / f"worker{i}.ready", args, on_ready, on_exit))
            log.info("%d stream(s) in %d worker process(es): %s", len(cfg.streams), len(workers), "; ".join(
                f"worker {w.index}: {', '.join(s.name for s in g) or 'no streams'}" for w, g in zip(workers, groups, strict=True)))
            first, rest = workers[0], workers[1:]
            await first.start()
            runs.append(asyncio.create_task(first.run(), name="worker-0"))
            if not await first.wait_ready(READY_TIMEOUT_S, stopping) and not stopping.is_set():
                log.warning("worker 0 did not get ready within %.0f s or ended; starting the others anyway", READY_TIMEOUT_S)
            for worker in rest:
                if stopping.is_set():
                    break
                await worker.start()
                runs.append(asyncio.create_task(worker.run(), name=f"worker-{worker.index}"))
            all_done = asyncio.ensure_future(asyncio.gather(*runs))
            await first_of(asyncio.shield(all_done), stopping.wait())  # the shield: all_done outlives the wait
            if front is not None:
                await front.close()  # no request reaches a worker that is stopping
                front = None
            if not all_done.done():
                log.info("stopping %d worker(s)", len(runs))
                for worker in workers:
                    worker.stop()
                try:
                    await asyncio.wait_for(asyncio.shield(all_done), STOP_GRACE_S)
                except TimeoutError:
                    log.error("a worker did not stop within %.0f s: killed", STOP_GRACE_S)
                    for worker in workers:
                        worker.kill()
            codes = await all_done
    finally:
        for worker in workers:  # only if we failed ourselves: by now every worker has exited otherwise
            worker.kill()
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        if front is not None:
            await front.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if embedded is not None:
            embedded.close()
    log.info("workers ended: exit codes %s, %d restart(s)", codes, sum(w.restarts for w in workers))
    worst = max(codes, key=lambda c: (c != 0, abs(c)))
    return 128 - worst if worst < 0 else worst  # killed by signal N: 128 + N, as a shell says

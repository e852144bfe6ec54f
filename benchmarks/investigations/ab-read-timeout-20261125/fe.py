"""One front-end-alone case (sys.argv: res streams seconds) -> one JSON line."""
import asyncio, json, os, sys
from dataclasses import asdict
from pathlib import Path
from lab.bench.pipeline import run_front_end, sample_videos
from streamguard.config import Config
from lab.servers.rtsp import RtspServer

async def main():
    res, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    out = Path("/tmp/abt/work"); out.mkdir(parents=True, exist_ok=True)
    videos = sample_videos(out / "videos", [res], 1.0)
    rtsp = RtspServer(videos, out, loop=True); rtsp.start()
    try:
        r = await run_front_end(Config(), rtsp, res, secs, 8.0, n)
    finally:
        rtsp.stop()
    print("RESULT", json.dumps({"native": bool(os.environ.get("SG_NATIVE_TIMEOUT")), **asdict(r)}), flush=True)
asyncio.run(main())

"""Why does NVDEC refuse to open an H.264 mp4 file (tests/test_hwaccel.py) while live FLV over TCP works?"""
import logging, sys, time
import av, av.logging, numpy as np
from fractions import Fraction
from av.codec.hwaccel import HWAccel

print("av", av.__version__, {k: v for k, v in av.library_versions.items() if k in ("libavcodec", "libavformat")})

def make(path, w, h, preset=None):
    y, x = np.mgrid[0:h, 0:w]
    with av.open(path, "w") as out:
        s = out.add_stream("libx264", rate=25); s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = Fraction(1, 25)
        if preset: s.options = {"preset": preset, "tune": "zerolatency"}
        for i in range(25):
            rgb = np.stack([(x + 8 * i) % 256, y % 256, np.full_like(x, 96)], axis=-1).astype(np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(s.encode(None))

LIVE = {"probesize": "32768", "analyzeduration": "0", "fflags": "nobuffer", "flags": "low_delay"}
cases = [(320, 240, None), (320, 240, "veryfast"), (1920, 1080, None)]
for w, h, preset in cases:
    p = f"/tmp/c_{w}_{preset}.mp4"; make(p, w, h, preset)
    for name, opts in [("file", {}), ("live-opts", LIVE)]:
        for ctxopt in [{"primary_ctx": "1"}, {}]:
            t0 = time.time()
            try:
                c = av.open(p, options=opts, hwaccel=HWAccel("cuda", allow_software_fallback=True, options=ctxopt))
                v = c.streams.video[0]
                n = sum(1 for _ in c.decode(v))
                print("OK  ", w, h, preset, name, ctxopt, "hw", v.codec_context.is_hwaccel, "frames", n, f"{time.time()-t0:.2f}s")
                c.close()
            except Exception as e:
                print("FAIL", w, h, preset, name, ctxopt, type(e).__name__, e, f"{time.time()-t0:.2f}s")
# the bench's 1080p clip as a file
p = ".gpucache/streamguard/bench_ingest_1920x1080.mp4"
try:
    c = av.open(p, hwaccel=HWAccel("cuda", allow_software_fallback=True, options={"primary_ctx": "1"}))
    v = c.streams.video[0]; print("OK   bench clip as file, hw", v.codec_context.is_hwaccel, "profile", v.codec_context.profile)
    c.close()
except Exception as e:
    print("FAIL bench clip as file", type(e).__name__, e)
# FFmpeg's own words for the first failing case
logging.basicConfig(level=logging.DEBUG, stream=sys.stdout)
av.logging.set_level(av.logging.DEBUG)
try:
    c = av.open("/tmp/c_320_None.mp4", hwaccel=HWAccel("cuda", allow_software_fallback=True, options={"primary_ctx": "1"}))
    print("OK verbose open, hw", c.streams.video[0].codec_context.is_hwaccel)
except Exception as e:
    print("FAIL verbose open", type(e).__name__, e)

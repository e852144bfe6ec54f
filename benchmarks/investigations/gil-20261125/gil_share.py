"""Where the GIL goes, from `py-spy record --gil --format raw` (only samples in which a
thread held the GIL are written): share of the samples by part of the pipeline, and GIL
milliseconds per analysed frame.

    python gil_share.py FILE.txt.gz RATE SECONDS FRAMES_PER_S
e.g. gil_run_2x720p_tiny.txt.gz 200 20 10 (2 streams at 5 analysed fps).
"""

import collections
import gzip
import sys

PARTS = [  # first match wins
    ("engine + batcher (torch eager, tiny ViT)", ("inference/", "torch/", "timm/", "batcher")),
    ("detector: image packet (frame copy)", ("_make_packet",)),
    ("detector: namedtuple per call", ("namedtuple",)),
    ("detector: other", ("detector.py",)),
    ("frame -> RGB (swscale)", ("types.py:53",)),
    ("crop", ("crops.py",)),
    ("tracker", ("kalman.py", "tracker.py", "mot.py", "reid.py")),
    ("scoring", ("scoring/",)),
    ("alerts, Redis", ("streamguard/redis/", "redis/")),
    ("ingest: packet loop, read-timeout callback, hand-off", ("source.py", "latest.py")),
    ("event loop, executor hand-offs", ("asyncio/", "concurrent/futures", "threading.py", "selectors.py")),
]


def part(stack: str) -> str:
    return next((name for name, keys in PARTS if any(k in stack for k in keys)), "other")


def main() -> None:
    path, rate, seconds, fps = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    counts: collections.Counter[str] = collections.Counter()
    with gzip.open(path, "rt") as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            counts[part(stack)] += int(n)
    total, possible = sum(counts.values()), rate * seconds
    print(f"{path}: GIL held in {total} of {possible:.0f} samples ({total / possible:.1%}), "
          f"{total / possible / fps * 1000:.2f} ms per analysed frame")
    for name, n in counts.most_common():
        print(f"  {n:5d} {n / total:6.1%} {n / possible / fps * 1000:6.2f} ms/frame  {name}")


if __name__ == "__main__":
    main()

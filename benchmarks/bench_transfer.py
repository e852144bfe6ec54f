"""What handing a batch of crops to the GPU costs, three ways side by side, round-robin.

The engine gets crops as a numpy array (uint8 [N, 224, 224, 3]: 38.5 MB at N = 256)
and must put them on the GPU before the model runs. Measured, per batch size:

- copy: `torch.tensor(x).to("cuda")`, a host copy, then a transfer from pageable memory;
- shared: `torch.from_numpy(x).to("cuda")`, the transfer straight from the array's memory;
- pinned: a copy into a page-locked buffer, then a transfer from it (what TorchEngine
  does since this measured fastest: `TorchEngine._upload`, one staging buffer).

    python3 benchmarks/bench_transfer.py [--batch 16,64,256] [--repeats 20] [--out FILE]

Prints a table and one JSON line; writes --out if given. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

SIZE = 224


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="16,64,256")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_transfer: needs a CUDA GPU (torch.cuda.is_available() is False)")
    rng = np.random.default_rng(0)
    rows = []
    for batch in (int(b) for b in args.batch.split(",")):
        x = rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
        pinned = torch.empty(x.shape, dtype=torch.uint8, pin_memory=True)
        ways = {
            "copy": lambda: torch.tensor(x).to("cuda"),
            "shared": lambda: torch.from_numpy(x).to("cuda"),
            "pinned": lambda: pinned.copy_(torch.from_numpy(x)).to("cuda", non_blocking=True),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats + 2):  # two warm-up rounds, dropped
            for name, way in ways.items():
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                y = way()
                torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
                assert y.shape == x.shape
        for name, ts in times.items():
            ms = statistics.median(ts[2:]) * 1000
            rows.append({"batch": batch, "way": name, "ms": round(ms, 3), "gb_per_s": round(x.nbytes / ms / 1e6, 2)})
    print(f"{'batch':>5} {'way':>7} {'ms':>8} {'GB/s':>7}")
    for r in rows:
        print(f"{r['batch']:>5} {r['way']:>7} {r['ms']:>8.3f} {r['gb_per_s']:>7.2f}")
    result = {"bench": "transfer", "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "results": rows}
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

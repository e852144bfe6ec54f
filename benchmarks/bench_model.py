"""Model-engine benchmark; same as `streamguard bench model` (run from the repo root).

    .venv/bin/python benchmarks/bench_model.py --arch base --batch 1,8,32
"""

import sys

from streamguard.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "model", *sys.argv[1:]]))

"""Whole-pipeline benchmark; same as `streamguard bench pipeline` (run from the repo root)."""

import sys

from streamguard.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "pipeline", *sys.argv[1:]]))

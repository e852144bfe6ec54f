#!/bin/bash
# A/B: the whole-pipeline bench on the new tree (HEAD) and the old base (90781d1), alternately.
set -u
mkdir -p /tmp/ab
ARGS="bench pipeline --streams 4 --resolutions 720p --seconds 30 --warmup 8 --front-end-seconds 0"
for round in 1 2; do
  (cd /work/main && .venv/bin/streamguard $ARGS --out /tmp/ab/head$round > /tmp/ab/head$round.log 2>&1)
  (cd /work/wt-base && PYTHONPATH=/work/wt-base /work/main/.venv/bin/python -m streamguard.cli $ARGS --out /tmp/ab/base$round > /tmp/ab/base$round.log 2>&1)
done
echo done

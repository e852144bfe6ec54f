#!/usr/bin/env bash
# Run 7: when in the window NVDEC's worst frames (0.9-2.2 s in runs 5-6) come, 32 x 1080p for 20 s,
# NVDEC (pictures kept on the GPU) and the CPU side by side, twice.
# Carry: .whl (make gpu-wheels) and .gpucache/streamguard/bench_ingest_1920x1080.mp4.
set -uo pipefail
R=/tmp/r7; mkdir -p $R
export XDG_CACHE_HOME=$PWD/.gpucache PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=$PWD:/tmp/site
for round in 1 2; do
  timeout 120 python3 benchmarks/bench_ingest.py --seconds 20 --sizes 1920x1080 --streams 32 --hwaccel cuda,none \
    --out $R/late-$round.json > $R/late-$round.txt 2>&1
  echo "round $round rc=$?"; grep -v "^{" $R/late-$round.txt | tail -3 | cut -c1-240
done
python3 -c "
import json
for f in ['$R/late-1.json', '$R/late-2.json']:
    for r in json.load(open(f))['results']:
        print(r['hwaccel'], r['latency_ms_max'], r['worst_at_s'], r['frames_over_500ms'], r['frames_over_500ms_at_s'], r['startup_s'])
"
tar czf $OUT/r7.tgz -C /tmp r7

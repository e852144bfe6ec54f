#!/usr/bin/env bash
# Run 8: after LatestQueue measures a consumer's pace from each get's return to its next call
# (a consumer held up once was left on keyframes, one analysed frame a second: the lowest
# stream at 32 and 64 NVDEC streams in runs 5 and 7): 64 and 32 1080p streams on NVDEC, 15 s.
set -uo pipefail
R=/tmp/r8; mkdir -p $R
export XDG_CACHE_HOME=$PWD/.gpucache PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=$PWD:/tmp/site
timeout 130 python3 benchmarks/bench_ingest.py --seconds 15 --sizes 1920x1080 --streams 64,32 --hwaccel cuda \
  --out $R/after-fix.json > $R/after-fix.txt 2>&1
echo "rc=$?"; grep -v "^{" $R/after-fix.txt | tail -3 | cut -c1-240
tar czf $OUT/r8.tgz -C /tmp r8

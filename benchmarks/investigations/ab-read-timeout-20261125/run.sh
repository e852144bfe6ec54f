#!/bin/bash
# A/B of the read timeout (docs/benchmarks.md): PyAV's interrupt callback vs FFmpeg's RTSP `timeout`,
# with native-timeout.patch (beside this script) applied to streamguard/ingest/source.py as of 2026-11-25
# (the variant set by SG_NATIVE_TIMEOUT); /tmp/abt/fe.py is a copy of fe.py (beside this script).
# Results: benchmarks/results/ab-read-timeout-20261125/log.txt.
cd /work/main
for round in 1 2 3; do
  for case in "1080p 16" "720p 16" "1080p 8"; do
    for v in pyav native; do
      if [ $v = native ]; then export SG_NATIVE_TIMEOUT=1; else unset SG_NATIVE_TIMEOUT; fi
      echo "=== $round $case $v $(date +%T)"
      .venv/bin/python /tmp/abt/fe.py $case 25 2>&1 | grep RESULT
    done
  done
done
echo DONE

#!/bin/bash
# GIL per analysed frame, mediapipe's process() (head = d4d3a61, a worktree) vs _LegacyFullRange.detections
# (new), alternating, 2 x 1080p front end alone; results: benchmarks/results/gil-20261125/ab-namedtuple/; /tmp/abt/fe.py is a copy of benchmarks/investigations/ab-read-timeout-20261125/fe.py.
for round in 1 2 3; do
  for v in head new; do
    if [ $v = new ]; then src=/work/main; else src=/tmp/wt-head; fi
    cd $src
    PYTHONPATH=$src /work/main/.venv/bin/python /tmp/abt/fe.py 1080p 2 40 > /tmp/abt/ab_$v$round.log 2>&1 &
    sleep 14
    PID=$(pgrep -f "abt/fe.py 1080p 2 40" | head -1)
    /work/main/.venv/bin/py-spy record --pid $PID --gil --rate 200 --duration 25 --format raw --output /tmp/abt/ab_$v$round.txt > /dev/null 2>&1
    wait
    gzip -f /tmp/abt/ab_$v$round.txt
    echo "$round $v $(python3 /work/main/benchmarks/investigations/gil-20261125/gil_share.py /tmp/abt/ab_$v$round.txt.gz 200 25 10 | head -1 | grep -o '[0-9.]* ms per analysed frame') $(grep -o '"cpu_cores": [0-9.]*' /tmp/abt/ab_$v$round.log)"
  done
done
echo DONE

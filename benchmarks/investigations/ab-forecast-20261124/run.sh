#!/bin/bash
# Side by side: this change (/work/main) vs main before it (/tmp/wt-main), alternating per case.
# Results (/tmp/ab/new, /tmp/ab/main): benchmarks/results/ab-forecast-20261124/.
cd /work/main  # the change; /tmp/wt-main: a git worktree of main before it (405ac73)
for round in 1 2; do
  for n in 8 16; do
    for res in 720p 1080p; do
      for v in new main; do
        if [ $v = new ]; then src=/work/main; else src=/tmp/wt-main; fi
        cd $src
        echo "=== round $round $n x $res $v $(date +%T)"
        PYTHONPATH=$src /work/main/.venv/bin/python -m streamguard.cli bench pipeline --streams $n --resolutions $res \
          --seconds 30 --front-end-seconds 0 --out /tmp/ab/$v --warmup 8 2>&1 | grep -E "^ *$n +$res"
      done
    done
  done
done
echo DONE

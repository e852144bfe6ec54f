#!/usr/bin/env bash
# Second device run: NVDEC-on-files diagnosis, the CUDA tests with the staging buffer, the engine
# with it (fp16, graphs on/off), and many 1080p streams with the start-up left out of the window.
# (diag.py was carried as .gpudiag/diag.py then.) Results: benchmarks/results/gpu-h200-20261204/run2/.
set -uo pipefail
R=/tmp/r2; mkdir -p $R
export XDG_CACHE_HOME=$PWD/.gpucache PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
timeout 60 python3 benchmarks/investigations/gpu-h200-20261204/diag.py > $R/diag.txt 2>&1; echo "diag rc=$?"; grep -E "^(OK|FAIL|av)" $R/diag.txt
grep -iE "error|cuda|nvdec|cuvid|hwaccel|format" $R/diag.txt | grep -v "^OK\|^FAIL" | head -30
timeout 120 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_export.py tests/test_hwaccel.py > $R/tests.txt 2>&1; echo "tests rc=$?"; tail -12 $R/tests.txt
timeout 90 python3 -m streamguard.cli bench model --device cuda --arch base --precision fp16 --batch 1,16,32,64,256 --repeats 10 --out $R > $R/model.txt 2>&1; echo "model rc=$?"; grep -v "^{" $R/model.txt | tail -14
timeout 150 python3 benchmarks/bench_ingest.py --seconds 20 --sizes 1920x1080 --streams 32 --hwaccel none,cuda --out $R/many32.json > $R/many32.txt 2>&1; echo "many32 rc=$?"; tail -4 $R/many32.txt | cut -c1-200
nvidia-smi dmon -s u -d 1 > $R/dmon.txt 2>&1 & d=$!
timeout 100 python3 benchmarks/bench_ingest.py --seconds 20 --sizes 1920x1080 --streams 64 --hwaccel cuda --out $R/many64.json > $R/many64.txt 2>&1; echo "many64 rc=$?"; tail -3 $R/many64.txt | cut -c1-200
kill $d; awk 'NR>2{print $5}' $R/dmon.txt | tr '\n' ' '; echo
tar czf $OUT/r2.tgz -C /tmp r2

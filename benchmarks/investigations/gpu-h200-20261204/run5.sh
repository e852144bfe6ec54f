#!/usr/bin/env bash
# Run 5 (the session after runs 1-4): NVDEC pictures kept in GPU memory until analysis takes
# them (ingest/hwaccel.py, is_hw_owned) against every picture downloaded as decoded; the engine
# on a non-blocking CUDA stream of its own against the legacy default stream, beside 32 NVDEC
# streams. Carry: .whl (make gpu-wheels) and .gpucache/streamguard/bench_ingest_1920x1080.mp4.
set -uo pipefail
R=/tmp/r5; mkdir -p $R
export XDG_CACHE_HOME=$PWD/.gpucache PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=$PWD:/tmp/site
{ nproc; nvidia-smi --query-gpu=name,driver_version --format=csv; python3 -c 'import torch, av; print(torch.__version__, av.__version__)'; } > $R/machine.txt 2>&1
timeout 170 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_hwaccel.py tests/test_export.py > $R/tests.txt 2>&1
echo "tests rc=$?"; grep -E "passed|failed|FAILED|Error|assert" $R/tests.txt | tail -15 | cut -c1-300
nvidia-smi dmon -s u -d 1 > $R/dmon.txt 2>&1 & d=$!
timeout 200 python3 benchmarks/bench_ingest.py --seconds 15 --sizes 1920x1080 --streams 32,64 --hwaccel cuda,cuda-download-all \
  --out $R/many.json > $R/many.txt 2>&1
echo "many rc=$?"; grep -v "^{" $R/many.txt | tail -5 | cut -c1-220
echo "---- engine" >> $R/dmon.txt
timeout 180 python3 benchmarks/bench_ingest.py --seconds 15 --sizes 1920x1080 --streams 32 --hwaccel cuda \
  --engine none,own-stream,default-stream --engine-batch 64 --out $R/engine.json > $R/engine.txt 2>&1
echo "engine rc=$?"; grep -v "^{" $R/engine.txt | tail -4 | cut -c1-220
kill $d
tar czf $OUT/r5.tgz -C /tmp r5

#!/usr/bin/env bash
# Run 6: the CPU against NVDEC (pictures kept on the GPU) for 1, 16 and 32 1080p streams, both with
# each analysed frame made RGB in its stream's thread, as the pipeline does; then a ViT-B engine
# (own stream, batch 64) beside 1 and 32 streams, decoded by the CPU and by NVDEC.
# Carry: .whl (make gpu-wheels) and .gpucache/streamguard/bench_ingest_1920x1080.mp4.
set -uo pipefail
R=/tmp/r6; mkdir -p $R
export XDG_CACHE_HOME=$PWD/.gpucache PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
export PYTHONPATH=$PWD:/tmp/site
timeout 190 python3 benchmarks/bench_ingest.py --seconds 12 --sizes 1920x1080 --streams 1,16,32 --hwaccel none,cuda \
  --out $R/cpu-vs-nvdec.json > $R/cpu-vs-nvdec.txt 2>&1
echo "cpu-vs-nvdec rc=$?"; grep -v "^{" $R/cpu-vs-nvdec.txt | tail -7 | cut -c1-220
timeout 170 python3 benchmarks/bench_ingest.py --seconds 12 --sizes 1920x1080 --streams 1,32 --hwaccel none,cuda \
  --engine own-stream --engine-batch 64 --out $R/engine.json > $R/engine.txt 2>&1
echo "engine rc=$?"; grep -v "^{" $R/engine.txt | tail -5 | cut -c1-220
tar czf $OUT/r6.tgz -C /tmp r6

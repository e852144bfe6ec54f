#!/usr/bin/env bash
# Run 3: the primary context's flags after torch, the tests, the engine with the staging buffer filled by
# torch's copy, and 32 NVDEC streams on the shared context against a context per stream
# (ingest_private_ctx.py, carried as .gpudiag/ingest_private_ctx.py then).
# Results: benchmarks/results/gpu-h200-20261204/run3/.
set -uo pipefail
R=/tmp/r3; mkdir -p $R
export XDG_CACHE_HOME=$PWD/.gpucache PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
timeout 40 python3 -c "
import torch; from streamguard.cuda_context import primary_context_state as s, share_primary_context as sh
print('before torch', s()); torch.ones(1, device='cuda'); print('after torch', s()); print('share ->', sh()); print('after share', s())
x = torch.randn(1000, 1000, device='cuda'); print('torch still works', float((x @ x).sum()) != 0)
" 2>&1 | tee $R/ctx.txt
timeout 130 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_hwaccel.py tests/test_export.py > $R/tests.txt 2>&1; echo "tests rc=$?"; grep -E "passed|failed|FAILED|Error" $R/tests.txt | tail -8
timeout 60 python3 -m streamguard.cli bench model --device cuda --arch base --precision fp16 --batch 16,64,256 --repeats 10 --out $R > $R/model.txt 2>&1; echo "model rc=$?"; grep -v "^{" $R/model.txt | tail -9
nvidia-smi dmon -s um -d 1 > $R/dmon.txt 2>&1 & d=$!
timeout 75 python3 benchmarks/bench_ingest.py --seconds 20 --sizes 1920x1080 --streams 32 --hwaccel cuda --out $R/shared32.json > $R/shared32.txt 2>&1; echo "shared rc=$?"; tail -3 $R/shared32.txt | cut -c1-170
echo "---- private contexts" >> $R/dmon.txt
timeout 75 python3 benchmarks/investigations/gpu-h200-20261204/ingest_private_ctx.py --seconds 20 --sizes 1920x1080 --streams 32 --hwaccel cuda --out $R/private32.json > $R/private32.txt 2>&1; echo "private rc=$?"; tail -3 $R/private32.txt | cut -c1-170
kill $d; grep -v "^#" $R/dmon.txt | awk '{print $5"/"$8}' | tr '\n' ' '; echo
tar czf $OUT/r3.tgz -C /tmp r3

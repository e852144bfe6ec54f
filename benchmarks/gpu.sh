#!/usr/bin/env bash
# The GPU part of the whole-pipeline benchmark (docs/benchmarks.md), for a lent GPU machine:
# torch-CUDA and NVDEC correctness (tests/test_export.py's CUDA cases, tests/test_hwaccel.py),
# every engine on CUDA (torch fp16/bf16, CUDA graphs on and off) with the one-face 5-fps streams
# each keeps up with, and the CPU one live stream's ingest costs with NVDEC against without.
#
# That machine's python3 has torch with CUDA, timm, onnx, onnxruntime, pytest, matplotlib but
# not pydantic or PyAV: `make gpu-wheels` here fetches what it lacks into .whl/, which the device tool
# carries (carry: [".whl"]); then, there, from the repository root: `bash benchmarks/gpu.sh`.
# DEVICE=cpu ARCH=tiny BATCHES=1,2 runs the same steps on a machine without a GPU (a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
device=${DEVICE:-cuda}
mkdir -p "$out"
if ! python3 -c "import pydantic, av" 2>/dev/null; then
  compgen -G ".whl/*.whl" >/dev/null || { echo "python3 lacks pydantic or av and .whl/ has no wheels: run 'make gpu-wheels' and carry .whl" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/streamguard-site .whl/*.whl
  export PYTHONPATH=/tmp/streamguard-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
fi
# --noconftest: the suite's fixtures start Redis and RTSP servers that this machine lacks; these tests need none.
python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_export.py tests/test_hwaccel.py 2>&1 | tee "$out/gpu-tests.txt"
python3 -m streamguard.cli bench model --device "$device" --arch "${ARCH:-base}" --batch "${BATCHES:-1,8,32,64,128,256}" \
  --repeats "${REPEATS:-10}" --out "$out" 2>&1 | tee "$out/gpu-bench-model.txt"
hwaccel=$([ "$device" = cuda ] && echo none,cuda || echo none,auto)
python3 benchmarks/bench_ingest.py --seconds "${INGEST_SECONDS:-20}" --sizes "${SIZES:-1920x1080,3840x2160}" --hwaccel "$hwaccel" \
  --out "$out/ingest-$device.json" 2>&1 | tee "$out/gpu-bench-ingest.txt"

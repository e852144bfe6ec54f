#!/usr/bin/env bash
# Run 10: after TorchEngine captures CUDA graphs in thread_local mode (run 9: in the default
# global mode, NVDEC's calls in the decoding threads invalidated the first capture and every
# stream failed): the CUDA tests, the new one also against the old mode (must fail there), then
# the whole pipeline on 16, 32 and 64 1080p two-face streams (FLV over TCP), as in run 9.
# Carry: .gpusite and benchmarks/results/videos/two_faces_1080p.mp4.
set -uo pipefail
R=/tmp/r10; mkdir -p $R/pipe/videos
export XDG_CACHE_HOME=$PWD/.gpucache PYTHONUNBUFFERED=1
tar xJf .gpusite/site312.tar.xz -C /tmp || exit 2
export PYTHONPATH=$PWD:/tmp/site312
cp benchmarks/results/videos/two_faces_1080p.mp4 $R/pipe/videos/
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_export.py -k "cuda or captured" > $R/tests.txt 2>&1
echo "tests rc=$?"; tail -3 $R/tests.txt
cp streamguard/inference/torch_engine.py $R/te.py
sed -i 's/capture_error_mode="thread_local"/capture_error_mode="global"/' streamguard/inference/torch_engine.py
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_export.py -k captured > $R/tests-global.txt 2>&1
echo "the same test in global mode rc=$? (1 = failed, as it should)"; grep -E "^E .*(Error|error)" $R/tests-global.txt | head -3 | cut -c1-200
cp $R/te.py streamguard/inference/torch_engine.py
printf 'model: {device: cuda, precision: fp16}\nbatcher: {max_batch: 64}\n' > $R/gpu.yaml
for n in 16 32 64; do
  timeout 120 python3 -m streamguard.cli bench pipeline --server flv --config $R/gpu.yaml --resolutions 1080p \
    --streams $n --seconds 15 --warmup 10 --front-end-seconds 0 --out $R/pipe > $R/pipe-$n.txt 2>&1
  echo "pipeline $n rc=$? failed streams: $(grep -c 'failed' $R/pipe-$n.txt)"
  grep -v "^{" $R/pipe-$n.txt | grep -v "INFO\|W0000\|I0000\|Warning\|pkg_resources\|connection_kwargs" | tail -3 | cut -c1-260
done
rm -rf $R/pipe/videos
tar czf $OUT/r10.tgz -C /tmp r10

#!/usr/bin/env bash
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/pydantic*.whl .whl/annotated*.whl .whl/typing*.whl .whl/av-*.whl
export PYTHONPATH=$PWD:/tmp/site
timeout 100 python3 -m pytest -q --noconftest -p no:cacheprovider tests/test_hwaccel.py -k "gpu_decodes or shares or refuses or cpu_decodes" 2>&1 | tail -25

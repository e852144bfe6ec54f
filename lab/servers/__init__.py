"""Real servers for tests and benchmarks (not used by the runtime)."""

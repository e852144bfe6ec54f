"""Benchmarks that measure the product as it runs (`streamguard bench ...`)."""

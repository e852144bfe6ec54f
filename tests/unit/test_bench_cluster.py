"""`streamguard bench cluster`: its command line and its table (the measurement itself needs a
Ray cluster and minutes: it is run by hand, docs/benchmarks.md)."""

from __future__ import annotations

import json

import pytest

from lab.bench.cluster import table
from streamguard.cli import main
from tests.support import REPO

RESULT = REPO / "benchmarks" / "results" / "cluster-20261207" / "run3.json"


def test_bad_sizes_are_one_clear_error(capsys):
    assert main(["bench", "cluster", "--streams", "0"]) == 2
    assert "--streams and --nodes must be >= 1" in capsys.readouterr().err


def test_the_table_names_the_cpu_the_ratio_and_the_failover():
    result = json.loads(RESULT.read_text())
    text = table(result)
    assert result["cpu"] in text
    assert f"ray / processes  {result['cluster_over_processes']}" in text
    assert f"reassigned in {result['failover']['reassigned_s']} s" in text
    assert result["cluster_over_processes"] == pytest.approx(
        result["cluster"]["analysed_fps"] / result["processes"]["analysed_fps"], abs=0.001)

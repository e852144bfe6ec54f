"""The import graph of `streamguard/`: no cycle, no import from a lower layer to a higher
one, and nothing the product runs imports the lab, the tests or the benchmarks.

Layers, lowest first (docs/architecture.md draws them). A module may import any
module of a lower layer and any module of its own package; two packages of one layer
(the stages) stay independent, so that each can be read and changed alone.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGE = REPO / "streamguard"

LAYERS: list[set[str]] = [
    # nouns and plumbing every layer uses
    {"__init__", "_torchvision_compat", "errors", "types", "aio", "blas", "metrics", "cuda_context", "redact", "thumbnails",
     "samples"},
    {"config", "logsafe"},
    {"events", "model"},
    # the stages, each on its own
    {"ingest", "faces", "inference", "scoring", "redis"},
    {"pipeline"},
    {"console", "connectors"},
    {"server"},
    # composition: the app (one process), the supervisor (several), what every command shares
    {"app", "supervisor", "commandline"},
    # beyond one host: shards run the app, a director places streams on them (Ray)
    {"cluster"},
    # commands
    {"report", "cli"},
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}
OUTSIDE_THE_PRODUCT = ("lab", "tests", "benchmarks", "training")


def unit(module: str) -> str:
    """streamguard.ingest.latest -> 'ingest'; streamguard -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports() -> dict[str, set[str]]:
    """Every module of the package -> the modules it imports (local imports too).

    `from pkg import name` imports the module pkg.name when there is one, else pkg."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets.update(f"{source}.{a.name}" if f"{source}.{a.name}" in paths else source for a in node.names)
        graph[name] = targets
    return graph


GRAPH = imports()


def test_every_unit_of_the_package_has_a_layer():
    assert {unit(m) for m in GRAPH} <= set(LAYER_OF), sorted({unit(m) for m in GRAPH} - set(LAYER_OF))


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_down_or_stay_in_their_package(module):
    here = unit(module)
    wrong = []
    for target in sorted(GRAPH[module]):
        if target.split(".")[0] in OUTSIDE_THE_PRODUCT:
            wrong.append(f"{target} (outside the product)")
        elif target.startswith("streamguard.") and target in GRAPH and unit(target) != here:
            there = unit(target)
            if LAYER_OF[there] >= LAYER_OF[here]:
                wrong.append(f"{target} (layer {LAYER_OF[there]} '{there}' from layer {LAYER_OF[here]} '{here}')")
    assert not wrong, f"{module} imports " + "; ".join(wrong)


def test_no_import_cycle():
    graph = {m: {t for t in targets if t in GRAPH and t != m} for m, targets in GRAPH.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return path[path.index(t):] + [t] if t in path else [m, t]
            if t not in state and (cycle := visit(t, path + [t])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            assert (cycle := visit(m, [m])) is None, " -> ".join(cycle)


def test_what_run_loads_imports_nothing_from_the_lab():
    """`streamguard run` parses its command line and imports the whole runtime: not one module of
    the lab, the tests or the benchmarks comes with it (`bench` is loaded only when asked for), nor
    Ray (a single host needs no cluster dependency)."""
    code = (
        "import sys\n"
        "from streamguard.cli import build_parser\n"
        "argv = ['run', '--stream', 'cam=rtsp://127.0.0.1:9/none', '--http', '127.0.0.1:0']\n"
        "assert build_parser(argv).parse_args(argv).command == 'run'\n"
        "import streamguard.app, streamguard.supervisor, streamguard.redis.sink, streamguard.redis.embedded\n"
        "import streamguard.redis.subscriber, streamguard.ingest.webrtc, streamguard.inference.onnx_engine\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {OUTSIDE_THE_PRODUCT + ('ray',)!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_lab_command_is_there_when_asked_for():
    code = (
        "import sys\n"
        "from streamguard.cli import build_parser\n"
        "argv = ['bench', 'model', '--arch', 'tiny']\n"
        "assert build_parser(argv).parse_args(argv).arch == 'tiny'\n"
        "print('lab.bench.commands' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"

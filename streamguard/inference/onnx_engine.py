"""The onnxruntime backend (CPU): runs an ONNX file written by `export-onnx` or `quantize`.

The file must keep the engine contract (input `crops` uint8 [N, S, S, 3] with a dynamic
batch axis; outputs `p_fake` [N] and `embedding` [N, D], float32) and carry its sidecar;
anything else is refused when it is opened, naming the file and what differs, so a
wrong model never reaches a stream.

Spinning is off: after each batch onnxruntime's worker threads would otherwise
busy-wait for the next one, taking the cores that face detection needs in between.

`parallel_calls` > 1 runs that many calls at once on one session (its `run` is
thread-safe), the cores shared among them (`concurrency`: the batcher keeps that
many batches in flight). One call on all cores synchronises its threads at every
operator, so when decoding or detection takes a core for a moment the others wait
too; independent calls lose only the time taken. On 2 cores (ViT-B int8) two
one-thread calls gave 1.0-1.4x the crops/s of one two-thread call alone, but in the
whole pipeline, with every stream kept to an even share, fewer than one call: so one
call is the default (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from streamguard.config import ModelConfig
from streamguard.errors import CheckpointError
from streamguard.inference.contract import INPUT_NAME, Engine, check_crops, check_fits, read_sidecar

log = logging.getLogger(__name__)


def _describe(arg: object) -> str:
    """'crops' tensor(uint8) ['N', 224, 224, 3] for an onnxruntime NodeArg."""
    return f"{arg.name!r} {arg.type} {list(arg.shape)}"


def check_contract(path: Path, session: object) -> tuple[int, int]:
    """(input size S, embedding dim D) of a session that keeps the engine contract; else CheckpointError."""
    inputs, outputs = session.get_inputs(), {o.name: o for o in session.get_outputs()}
    expected = f"expected one input {INPUT_NAME!r} tensor(uint8) [N, S, S, 3] with a dynamic N"
    x = inputs[0] if len(inputs) == 1 else None
    shape = list(x.shape) if x is not None else []
    if (
        x is None
        or x.name != INPUT_NAME
        or x.type != "tensor(uint8)"
        or len(shape) != 4
        or isinstance(shape[0], int)
        or not isinstance(shape[1], int)
        or shape[1:] != [shape[1], shape[1], 3]
    ):
        found = ", ".join(_describe(a) for a in inputs) or "no inputs"
        raise CheckpointError(f"{path}: not a streamguard engine: inputs {found}; {expected} (see `streamguard export-onnx`)")
    p_fake, embedding = outputs.get("p_fake"), outputs.get("embedding")
    if (
        p_fake is None
        or embedding is None
        or p_fake.type != "tensor(float)"
        or embedding.type != "tensor(float)"
        or len(p_fake.shape) != 1
        or len(embedding.shape) != 2
        or not isinstance(embedding.shape[1], int)
    ):
        found = ", ".join(_describe(o) for o in outputs.values())
        raise CheckpointError(
            f"{path}: not a streamguard engine: outputs {found}; expected 'p_fake' tensor(float) [N] "
            "and 'embedding' tensor(float) [N, D]"
        )
    return int(shape[1]), int(embedding.shape[1])


def threads_per_call(threads: int | None, parallel_calls: int, cores: int) -> int:
    """Unset, calls at once share the cores; one call gets onnxruntime's default (0: one
    thread per physical core, which hyper-threads would not speed up)."""
    if threads is not None:
        return threads
    return 0 if parallel_calls == 1 else max(1, cores // parallel_calls)


class OnnxEngine(Engine):
    def __init__(self, path: Path | str, threads: int | None = None, parallel_calls: int = 1):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"engine not found: {path}")
        self.concurrency = parallel_calls
        self.threads = threads = threads_per_call(threads, parallel_calls, len(os.sched_getaffinity(0)))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own classes for unreadable or invalid graphs
            first = (str(err).strip().splitlines() or ["unreadable"])[0]
            raise CheckpointError(f"{path}: not a loadable ONNX model ({first})") from None
        size, embed_dim = check_contract(path, session)
        sidecar = read_sidecar(path)
        if (sidecar.meta.img_size, sidecar.embed_dim) != (size, embed_dim):
            raise CheckpointError(
                f"{path}: the graph takes {size} px crops and gives {embed_dim}-d embeddings, but its sidecar says "
                f"{sidecar.meta.img_size} px and {sidecar.embed_dim}-d"
            )
        self.meta = sidecar.meta
        self.embed_dim = embed_dim
        self.input_size = size
        self.precision = sidecar.precision
        self._session = session

    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """crops uint8 [N, S, S, 3] RGB -> (p_fake float32 [N], embedding float32 [N, D])."""
        check_crops(crops, self.input_size)
        if self._session is None:
            raise RuntimeError("OnnxEngine is closed")
        if crops.shape[0] == 0:
            return np.zeros(0, np.float32), np.zeros((0, self.embed_dim), np.float32)
        p_fake, embedding = self._session.run(["p_fake", "embedding"], {INPUT_NAME: np.ascontiguousarray(crops)})
        return p_fake, embedding

    def calls_described(self) -> str:
        threads = f"{self.threads} thread(s)" if self.threads else "onnxruntime's default threads"
        return f"{self.concurrency} call(s) at once on {threads} each"

    def close(self) -> None:
        self._session = None


def open_onnx(path: Path, cfg: ModelConfig, img_size: int) -> Engine:
    """The registry's opener for .onnx files (`inference.registry.BACKENDS`)."""
    engine = check_fits(OnnxEngine(path, threads=cfg.threads, parallel_calls=cfg.parallel_calls), path, cfg, img_size)
    log.info("inference: onnxruntime %s on CPU, %s (%s)", engine.precision, engine.calls_described(), path)
    return engine

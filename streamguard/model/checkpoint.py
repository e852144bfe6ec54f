"""Load FSFM and streamguard checkpoints safely into an FSFMViT plus what it needs to run.

The weights are someone else's file, so loading never runs pickled code: `torch.load`
with `weights_only=True`, allowing only the two classes official FSFM checkpoints
pickle beside their tensors (`argparse.Namespace` for `args`, and `pathlib.PosixPath`,
which the fine-tuning script stores as `args.output_dir`). A model is useless without
its input normalisation and the meaning of its outputs, so every load returns a
`ModelMeta` with them, plus a digest so logs and events say which weights scored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import pickle
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from streamguard.errors import CheckpointError
from streamguard.model.fsfm import ARCHS, FSFMViT, build_fsfm_vit, infer_arch, resize_pos_embed

FORMAT = "streamguard.checkpoint.v1"
MEAN_STD_FILE = "pretrain_ds_mean_std.txt"
VGGFACE2_MEAN = (0.5482, 0.4234, 0.3655)  # FSFM's default when no MEAN_STD_FILE is present
VGGFACE2_STD = (0.2789, 0.2439, 0.2349)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # used by FSFM fine-tunes run with --normalize_from_IMN
IMAGENET_STD = (0.229, 0.224, 0.225)
FSFM_CLASS_NAMES = ("fake", "real")  # ImageFolder's alphabetical order
FSFM_FAKE_INDEX = 0
# Keys of the FSFM pretraining model that are not part of the encoder.
PRETRAIN_ONLY_PREFIXES = ("mask_token", "decoder_", "rep_decoder_", "projector.", "predictor.")
SAFE_GLOBALS = [argparse.Namespace, pathlib.PosixPath]

Source = Literal["fsfm-finetune", "fsfm-pretrain", "streamguard", "untrained"]


@dataclass(frozen=True)
class ModelMeta:
    """What a consumer must know to feed the model and read its output."""

    name: str  # e.g. "fsfm-vit-base"
    arch: str  # a key of ARCHS
    img_size: int
    mean: tuple[float, float, float]  # RGB, for pixels scaled to [0, 1]
    std: tuple[float, float, float]
    fake_index: int  # column of the softmax that is P(fake)
    class_names: tuple[str, ...]
    threshold: float | None  # decision threshold stored with the weights, if any
    digest: str  # first 12 hex chars of the sha256 of the weights
    trained: bool  # False: the head (or everything) is untrained; scores mean nothing
    source: Source
    path: str | None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(mean=list(self.mean), std=list(self.std), class_names=list(self.class_names))
        return d


@dataclass
class LoadedModel:
    model: FSFMViT
    meta: ModelMeta


def weights_digest(model: torch.nn.Module) -> str:
    """Short sha256 over every tensor of the state dict (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def _make_meta(model: FSFMViT, arch: str, **fields: Any) -> ModelMeta:
    return ModelMeta(
        name=f"fsfm-vit-{arch}",
        arch=arch,
        img_size=int(model.patch_embed.img_size[0]),
        digest=weights_digest(model),
        **fields,
    )


def _seeded_model(arch: str, seed: int, num_classes: int, img_size: int) -> FSFMViT:
    """A model whose random init depends only on `seed`, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_fsfm_vit(arch, num_classes=num_classes, img_size=img_size)


def untrained_model(arch: str = "base", seed: int = 0, img_size: int = 224) -> LoadedModel:
    """Random weights from `seed`: for smoke runs and tests; its scores mean nothing."""
    model = _seeded_model(arch, seed, len(FSFM_CLASS_NAMES), img_size).eval()
    meta = _make_meta(
        model,
        arch,
        mean=VGGFACE2_MEAN,
        std=VGGFACE2_STD,
        fake_index=FSFM_FAKE_INDEX,
        class_names=FSFM_CLASS_NAMES,
        threshold=None,
        trained=False,
        source="untrained",
        path=None,
    )
    return LoadedModel(model, meta)


# --- reading the file -------------------------------------------------------------------

_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*(.+)")


def _safe_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a torch checkpoint")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if m := _UNSAFE_GLOBAL.search(text):
            raise CheckpointError(
                f"{path}: refused to load: it pickles {m.group(1)}, which is not allowed "
                "(only tensors, plain types, argparse.Namespace and pathlib.PosixPath)"
            ) from None
        m = _UNPICKLER_ERROR.search(text)
        reason = m.group(1).strip() if m else (text.splitlines() or ["unreadable"])[0]
        raise CheckpointError(f"{path}: not a torch checkpoint ({reason})") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({err.strerror or err})") from None
    except Exception as err:  # the unpickler fails on garbage in many ways, none of them a bug here
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unreadable"
        raise CheckpointError(f"{path}: not a torch checkpoint ({type(err).__name__}: {first})") from None


def _read_mean_std(path: Path, args: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """FSFM's normalisation: ImageNet if fine-tuned with --normalize_from_IMN, else the
    JSON file beside the checkpoint, else VGGFace2 (what the official code falls back to)."""
    if getattr(args, "normalize_from_IMN", False) is True:
        return IMAGENET_MEAN, IMAGENET_STD
    stats = path.parent / MEAN_STD_FILE
    if not stats.is_file():
        return VGGFACE2_MEAN, VGGFACE2_STD
    try:
        first_line = next(line for line in stats.read_text().splitlines() if line.strip())
        data = json.loads(first_line)
        mean, std = tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"])
    except (StopIteration, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f'{stats}: expected {{"mean": [r, g, b], "std": [r, g, b]}} ({err!r})') from None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise CheckpointError(f"{stats}: mean and std need 3 values each, std positive")
    return mean, std


# --- building the model from a state dict -----------------------------------------------


def _check_state_dict(path: Path, state: Any) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'model' is not a state dict of tensors")
    return state


def _resolve_arch(path: Path, state: dict[str, torch.Tensor], arch: str | None) -> str:
    try:
        found = infer_arch(state)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    if arch is not None and arch != found:
        spec = ARCHS[found]
        raise CheckpointError(
            f"checkpoint {path} holds a {spec.name} (dim {spec.embed_dim}, depth {spec.depth}) but arch {arch!r} was asked for"
        )
    return found


def _load_into(path: Path, model: FSFMViT, state: dict[str, torch.Tensor], may_miss: frozenset[str]) -> None:
    """Copy `state` into `model` (pos_embed resized to the model's grid); only `may_miss` may be absent."""
    state = dict(state)
    if "pos_embed" in state:
        try:
            state["pos_embed"] = resize_pos_embed(state["pos_embed"], model.patch_embed.grid_size)
        except ValueError as err:
            raise CheckpointError(f"{path}: {err}") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape mismatch
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise CheckpointError(f"{path}: weights do not fit a {model.spec.name}: {detail}") from None
    missing = sorted(set(result.missing_keys) - may_miss)
    unexpected = sorted(result.unexpected_keys)
    if missing or unexpected:
        parts = [f"{label} {len(keys)} keys ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise CheckpointError(f"{path}: weights do not fit a {model.spec.name}: {'; '.join(parts)}")


def _num_classes(path: Path, state: dict[str, torch.Tensor]) -> int:
    head = state.get("head.weight")
    if head is None or head.ndim != 2:
        raise CheckpointError(f"{path}: no classifier head ('head.weight') in the weights")
    return int(head.shape[0])


def _from_fsfm(path: Path, ckpt: dict[str, Any], arch: str | None, img_size: int) -> LoadedModel:
    state = _check_state_dict(path, ckpt["model"])
    mean, std = _read_mean_std(path, ckpt.get("args"))
    pretrain = any(k.startswith(PRETRAIN_ONLY_PREFIXES) for k in state) or "head.weight" not in state
    if pretrain:
        # The encoder only: FSFM fine-tuning starts from it with fresh fc_norm and head.
        state = {k: v for k, v in state.items() if not k.startswith((*PRETRAIN_ONLY_PREFIXES, "norm."))}
        found = _resolve_arch(path, state, arch)
        model = _seeded_model(found, 0, len(FSFM_CLASS_NAMES), img_size)
        # As FSFM's fine-tuning script; seeded so the digest of these weights is repeatable.
        torch.nn.init.trunc_normal_(model.head.weight, std=2e-5, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(model.head.bias)
        _load_into(path, model, state, frozenset({"head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"}))
    else:
        found = _resolve_arch(path, state, arch)
        if (n := _num_classes(path, state)) != len(FSFM_CLASS_NAMES):
            raise CheckpointError(f"{path}: expected a 2-class (fake, real) FSFM head, found {n} classes")
        model = build_fsfm_vit(found, num_classes=n, img_size=img_size)
        _load_into(path, model, state, frozenset())
    meta = _make_meta(
        model.eval(),
        found,
        mean=mean,
        std=std,
        fake_index=FSFM_FAKE_INDEX,
        class_names=FSFM_CLASS_NAMES,
        threshold=None,
        trained=not pretrain,
        source="fsfm-pretrain" if pretrain else "fsfm-finetune",
        path=str(path),
    )
    return LoadedModel(model, meta)


def _field(path: Path, ckpt: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = ckpt.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CheckpointError(f"{path}: invalid {FORMAT} file: field {key!r} is {value!r}")
    return value


def _from_streamguard(path: Path, ckpt: dict[str, Any], arch: str | None, img_size: int) -> LoadedModel:
    state = _check_state_dict(path, ckpt.get("model"))
    found = _resolve_arch(path, state, arch if arch is not None else _field(path, ckpt, "arch", str))
    mean = tuple(float(v) for v in _field(path, ckpt, "mean", (list, tuple)))
    std = tuple(float(v) for v in _field(path, ckpt, "std", (list, tuple)))
    class_names = tuple(str(v) for v in _field(path, ckpt, "class_names", (list, tuple)))
    fake_index = _field(path, ckpt, "fake_index", int)
    threshold = ckpt.get("threshold")
    n = _num_classes(path, state)
    if len(mean) != 3 or len(std) != 3 or len(class_names) != n or not 0 <= fake_index < n:
        raise CheckpointError(
            f"{path}: invalid {FORMAT} file: need 3 mean/std values, {n} class names and 0 <= fake_index < {n}"
        )
    if threshold is not None and not isinstance(threshold, (int, float)):
        raise CheckpointError(f"{path}: invalid {FORMAT} file: field 'threshold' is {threshold!r}")
    model = build_fsfm_vit(found, num_classes=n, img_size=img_size)
    _load_into(path, model, state, frozenset())
    meta = _make_meta(
        model.eval(),
        found,
        mean=mean,
        std=std,
        fake_index=fake_index,
        class_names=class_names,
        threshold=None if threshold is None else float(threshold),
        trained=bool(ckpt.get("trained", True)),
        source="streamguard",
        path=str(path),
    )
    return LoadedModel(model, meta)


def load_checkpoint(path: Path | str, arch: str | None = None, img_size: int = 224) -> LoadedModel:
    """Load an official FSFM fine-tuned or pretraining checkpoint, or a streamguard one.

    `arch` None reads the variant from the weights; `img_size` other than the
    checkpoint's resizes its position embeddings (bicubic).
    """
    path = Path(path)
    ckpt = _safe_load(path)
    if isinstance(ckpt, dict) and "format" in ckpt:
        if ckpt["format"] != FORMAT:
            raise CheckpointError(f"{path}: unsupported checkpoint format {ckpt['format']!r} (expected {FORMAT!r})")
        return _from_streamguard(path, ckpt, arch, img_size)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        return _from_fsfm(path, ckpt, arch, img_size)
    raise CheckpointError(
        f"{path}: unknown checkpoint layout (expected an FSFM checkpoint with a 'model' state dict or a {FORMAT} file)"
    )


def save_checkpoint(path: Path | str, loaded: LoadedModel, extra: dict[str, Any] | None = None) -> Path:
    """Write `loaded` in streamguard's format: plain types only, so it loads with weights_only.

    `extra` (stored as "config") must be JSON-serialisable, e.g. the training settings.
    """
    path = Path(path)
    config = dict(extra or {})
    try:
        json.dumps(config)
    except TypeError as err:
        raise ValueError(f"save_checkpoint: extra must hold plain JSON types only ({err})") from None
    meta = loaded.meta
    payload = {
        "format": FORMAT,
        "arch": meta.arch,
        "img_size": meta.img_size,
        "model": {k: v.detach().cpu().contiguous() for k, v in loaded.model.state_dict().items()},
        "mean": list(meta.mean),
        "std": list(meta.std),
        "class_names": list(meta.class_names),
        "fake_index": meta.fake_index,
        "threshold": meta.threshold,
        "trained": meta.trained,
        "config": config,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a reader never sees half a file
    return path

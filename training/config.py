"""The typed training configuration (`configs/train/*.yaml`), one pydantic model per concern.

Defaults follow the FSFM fine-tuning recipe (FACTS.md): AdamW, base lr 2.5e-4 x
batch/256, layer-wise lr decay 0.65, weight decay 0.05, drop path 0.1, 10 epochs
with 5 of warm-up, label smoothing 0.1. The metric-learning follow-up adds the
triplet and attribution settings. As in the runtime's config, a typo or an
out-of-range value is an error naming the field, and `--set a.b=value` on the
command line overrides any field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from streamguard.config import format_validation_error, set_path  # one error format for both CLIs
from streamguard.errors import ConfigError

IDENTITIES = ("astronaut", "grace_hopper", "cameraman")  # real faces shipped inside packages (sample_faces.py)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _ordered(pair: tuple[float, float], name: str) -> None:
    if pair[0] > pair[1]:
        raise ValueError(f"{name}: the low end {pair[0]} is above the high end {pair[1]}")


class SampleFacesConfig(_Section):
    """A labelled set drawn from the packaged real faces (for smoke runs and demos, not real training)."""

    identities: list[Literal["astronaut", "grace_hopper", "cameraman"]] = Field(min_length=1)
    reals: int = Field(ge=1, le=1_000_000, description="Real crops: random poses, crops and colours of each identity")
    fakes: int = Field(0, ge=0, le=1_000_000, description="Self-blended fakes written with them (held-out sets)")
    seed: int = Field(0, description="Draws with another seed are new poses and new blends")
    frames_per_video: int = Field(8, ge=1, le=1000, description="Consecutive draws grouped as one pseudo-video")


class DataSplit(_Section):
    """Where one split's crops come from: a prepared index, or sample faces drawn into the run folder."""

    index: Path | None = Field(None, description="index.csv written by `streamguard-train prepare`")
    split: str | None = Field(None, description="Rows of the index to use (its `split` column); none = the section's name")
    sample_faces: SampleFacesConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSplit:
        if (self.index is None) == (self.sample_faces is None):
            raise ValueError("give exactly one of 'index' and 'sample_faces'")
        return self


class DataConfig(_Section):
    img_size: int = Field(224, ge=32, le=1024, description="Model input side; crops of another size are resized (bicubic)")
    train: DataSplit
    val: DataSplit | None = Field(None, description="Scored after every epoch (AUC in the log and plot)")
    sbi: bool = Field(False, description="Add one self-blended fake per real crop per epoch (a fresh blend each time)")
    attribution: Literal["none", "manipulation", "source"] = Field(
        "none", description="Extra head over manipulation types or source data sets (labels from the index)"
    )


class ModelSection(_Section):
    family: Literal["fsfm", "timm"] = Field("fsfm", description="fsfm: the FSFM ViT; timm: any timm classifier")
    arch: str = Field("base", description="fsfm: tiny, small, base, large; timm: a timm model name")
    init: Path | None = Field(
        None,
        description="fsfm: an official FSFM pretraining (or fine-tuned) checkpoint; timm: a timm weights file; "
        "none = from scratch",
    )
    drop_path: float = Field(0.1, ge=0.0, lt=1.0, description="Stochastic depth rate")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="timm: extra timm.create_model arguments, e.g. {channels: [16, 32, 64, 128]}"
    )


class TripletConfig(_Section):
    variant: Literal["none", "batch_all", "batch_hard", "semi_hard"] = Field(
        "none", description="Triplet loss on L2-normalised embeddings (batch_all was best in the follow-up paper)"
    )
    margin: float = Field(0.2, gt=0.0, le=4.0, description="Distance margin (embeddings are unit vectors: distances are 0..2)")
    weight: float = Field(1.0, ge=0.0, le=100.0)


class LossConfig(_Section):
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    triplet: TripletConfig = Field(default_factory=TripletConfig)
    attribution_weight: float = Field(0.5, ge=0.0, le=100.0, description="Weight of the attribution head's cross-entropy")


class BatchConfig(_Section):
    size: int = Field(32, ge=2, le=65536)
    sampler: Literal["random", "pk"] = Field("random", description="pk: every batch holds P classes x K crops each")
    classes: Literal["label", "attribution"] = Field(
        "label", description="The classes of the P x K sampler and of the triplet loss: real/fake, or attribution labels"
    )
    p: int = Field(2, ge=2, le=4096, description="Classes per batch (pk sampler); K = size / p")


class OptimConfig(_Section):
    epochs: int = Field(10, ge=1, le=100_000)
    steps_per_epoch: int | None = Field(None, ge=1, description="none = one pass over the training set")
    blr: float = Field(2.5e-4, gt=0.0, le=1.0, description="Base learning rate; lr = blr x batch size / 256")
    min_lr: float = Field(1e-6, ge=0.0, le=1.0, description="Learning rate at the end of the cosine")
    warmup_epochs: float = Field(5.0, ge=0.0, description="Linear warm-up from 0, then cosine to min_lr")
    weight_decay: float = Field(0.05, ge=0.0, le=1.0)
    layer_decay: float = Field(0.65, gt=0.0, le=1.0, description="lr of layer l = lr x decay^(L - l); 1 = off")
    clip_grad: float | None = Field(1.0, gt=0.0, description="Max gradient norm; none = no clipping")
    amp: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Mixed precision: fp16 on CUDA, bf16 on CPU. auto = on for CUDA and for CPUs with native bf16 "
        "(AVX512-BF16/AMX); off elsewhere, where bf16 is several times slower than fp32",
    )


class DegradeConfig(_Section):
    """Live-video degradations (probability and parameter range of each); see degrade.py."""

    noise_p: float = Field(0.2, ge=0.0, le=1.0)
    noise_std: tuple[float, float] = (2.0, 8.0)
    blur_p: float = Field(0.2, ge=0.0, le=1.0)
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    resample_p: float = Field(0.3, ge=0.0, le=1.0)
    resample_factor: tuple[float, float] = (0.3, 0.9)
    jpeg_p: float = Field(0.3, ge=0.0, le=1.0)
    jpeg_quality: tuple[int, int] = (30, 95)
    h264_p: float = Field(0.3, ge=0.0, le=1.0, description="Real libx264 intra-frame round trips")
    h264_crf: tuple[int, int] = (18, 40)

    @model_validator(mode="after")
    def _valid(self) -> DegradeConfig:
        if self.jpeg_p + self.h264_p > 1.0:
            raise ValueError("jpeg_p + h264_p must be at most 1 (a crop is compressed once)")
        if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise ValueError("jpeg_quality must lie in 1..100")
        if not (0 <= self.h264_crf[0] and self.h264_crf[1] <= 51):
            raise ValueError("h264_crf must lie in 0..51")
        if not (0 < self.resample_factor[0] and self.resample_factor[1] <= 1):
            raise ValueError("resample_factor must lie in (0, 1]")
        for name in ("noise_std", "blur_sigma", "resample_factor", "jpeg_quality", "h264_crf"):
            _ordered(getattr(self, name), name)
        return self


class AugmentConfig(_Section):
    """The FSFM fine-tuning augmentations (timm's create_transform) plus live-video degradations."""

    fsfm: bool = Field(True, description="Random resized crop, flip, RandAugment/colour jitter, random erasing")
    scale: tuple[float, float] = Field((0.08, 1.0), description="Random resized crop: area fraction kept")
    ratio: tuple[float, float] = Field((0.75, 1.3333), description="Random resized crop: aspect ratio")
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    # FSFM's rand-m9-mstd0.5-inc1, capped at magnitude 9 (mmax9): above it, timm's increasing
    # posterize keeps 0 bits, which Pillow >= 11 refuses (a random crash mid-training).
    auto_augment: str | None = Field("rand-m9-mstd0.5-inc1-mmax9", description="timm RandAugment spec; none = colour jitter")
    color_jitter: float = Field(0.4, ge=0.0, le=1.0, description="Used when auto_augment is none")
    reprob: float = Field(0.25, ge=0.0, le=1.0, description="Random erasing probability")
    mixup: float = Field(0.0, ge=0.0, le=10.0, description="Mixup alpha (0 = off); needs no triplet and no attribution")
    cutmix: float = Field(0.0, ge=0.0, le=10.0, description="CutMix alpha (0 = off); same condition")
    degrade: DegradeConfig = Field(default_factory=DegradeConfig)

    @model_validator(mode="after")
    def _valid(self) -> AugmentConfig:
        _ordered(self.scale, "scale")
        _ordered(self.ratio, "ratio")
        return self


class RunConfig(_Section):
    out_dir: Path = Field(Path("runs/default"), description="Checkpoints, logs and plots; --out overrides")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = Field(2, ge=0, le=256, description="Data-loading processes (0 = in the training process)")
    threads: int | None = Field(None, ge=1, le=256, description="Torch intra-op threads; none = torch default")
    resume: bool = Field(True, description="Continue from out_dir/last.pth when it exists")
    max_minutes: float | None = Field(None, gt=0, description="Stop (after checkpointing) once this much wall time has passed")


class TrainConfig(_Section):
    name: str = Field("run", min_length=1, max_length=64)
    data: DataConfig
    model: ModelSection = Field(default_factory=ModelSection)
    loss: LossConfig = Field(default_factory=LossConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.model.family == "fsfm" and self.model.arch not in ("tiny", "small", "base", "large"):
            raise ValueError(f"model.arch {self.model.arch!r} is not an FSFM ViT (tiny, small, base, large)")
        if self.model.family == "fsfm" and self.model.kwargs:
            raise ValueError("model.kwargs is for timm models; an FSFM ViT is fixed by its arch")
        if self.batch.sampler == "pk" and self.batch.size % self.batch.p:
            raise ValueError(f"batch.size {self.batch.size} is not a multiple of batch.p {self.batch.p}")
        if self.batch.classes == "attribution" and self.data.attribution == "none":
            raise ValueError("batch.classes 'attribution' needs data.attribution")
        mixing = self.augment.mixup > 0 or self.augment.cutmix > 0
        if mixing and (self.loss.triplet.variant != "none" or self.data.attribution != "none"):
            raise ValueError("mixup/cutmix blend labels, so they cannot be combined with a triplet loss or attribution")
        return self


def load_train_config(path: Path | str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a training YAML and apply dotted-path `overrides` (values already parsed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        set_path(data, dotted, value)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(path))) from None


def parse_set_arg(arg: str) -> tuple[str, Any]:
    """`--set a.b=value` -> ("a.b", value parsed as YAML, so numbers, booleans and lists work)."""
    key, sep, raw = arg.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {arg!r}")
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}") from None

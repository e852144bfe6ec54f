"""Checkpoints in each official FSFM layout and streamguard's own, written here with
random tensors under the official key names, load into the model they describe."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re

import pytest
import torch
import torch.nn.functional as F

from streamguard.errors import CheckpointError
from streamguard.model import build_fsfm_vit, load_checkpoint, save_checkpoint, untrained_model
from streamguard.model.checkpoint import IMAGENET_MEAN, VGGFACE2_MEAN, VGGFACE2_STD

DIM, DEPTH = 192, 12  # arch "tiny"


def encoder_state(seed: int, dim: int = DIM, depth: int = DEPTH, grid: int = 14) -> dict[str, torch.Tensor]:
    """The ViT encoder's tensors under FSFM's (timm's) key names."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.02, mean: float = 0.0) -> torch.Tensor:
        return mean + scale * torch.randn(*shape, generator=g)

    sd = {
        "cls_token": rnd(1, 1, dim),
        "pos_embed": rnd(1, 1 + grid * grid, dim, scale=0.1),
        "patch_embed.proj.weight": rnd(dim, 3, 16, 16),
        "patch_embed.proj.bias": rnd(dim),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        sd |= {
            p + "norm1.weight": rnd(dim, scale=0.1, mean=1.0),
            p + "norm1.bias": rnd(dim),
            p + "attn.qkv.weight": rnd(3 * dim, dim, scale=0.05),
            p + "attn.qkv.bias": rnd(3 * dim),
            p + "attn.proj.weight": rnd(dim, dim, scale=0.05),
            p + "attn.proj.bias": rnd(dim),
            p + "norm2.weight": rnd(dim, scale=0.1, mean=1.0),
            p + "norm2.bias": rnd(dim),
            p + "mlp.fc1.weight": rnd(4 * dim, dim, scale=0.05),
            p + "mlp.fc1.bias": rnd(4 * dim),
            p + "mlp.fc2.weight": rnd(dim, 4 * dim, scale=0.05),
            p + "mlp.fc2.bias": rnd(dim),
        }
    return sd


def finetune_state(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed + 100)
    return encoder_state(seed) | {
        "fc_norm.weight": 1 + 0.1 * torch.randn(DIM, generator=g),
        "fc_norm.bias": 0.1 * torch.randn(DIM, generator=g),
        "head.weight": 0.5 * torch.randn(2, DIM, generator=g),
        "head.bias": 0.1 * torch.randn(2, generator=g),
    }


def pretrain_state(seed: int = 2) -> dict[str, torch.Tensor]:
    """Encoder + final norm + what FSFM pretraining adds (rep decoder, MAE decoder, BYOL heads)."""
    rep, dec = DIM, 64
    return encoder_state(seed) | {
        "norm.weight": torch.ones(DIM),
        "norm.bias": torch.zeros(DIM),
        "mask_token": torch.zeros(1, 1, rep),
        "rep_decoder_embed.weight": torch.randn(rep, DIM),
        "rep_decoder_pos_embed": torch.randn(1, 197, rep),
        "rep_decoder_blocks.0.norm1.weight": torch.ones(rep),
        "rep_decoder_blocks.0.attn.qkv.weight": torch.randn(3 * rep, rep),
        "rep_decoder_norm.weight": torch.ones(rep),
        "rep_decoder_pred.weight": torch.randn(DIM, rep),
        "decoder_embed.weight": torch.randn(dec, rep),
        "decoder_pos_embed": torch.randn(1, 197, dec),
        "decoder_blocks.0.mlp.fc1.weight": torch.randn(4 * dec, dec),
        "decoder_norm.weight": torch.ones(dec),
        "decoder_pred.weight": torch.randn(16 * 16 * 3, dec),
        "projector.projection_head.0.weight": torch.randn(32, rep),
        "projector.projection_head.1.weight": torch.ones(32),
        "predictor.projection_head.0.weight": torch.randn(32, 16),
        "predictor.projection_head.3.weight": torch.randn(16, 32),
    }


def official_checkpoint(path: pathlib.Path, model_state: dict[str, torch.Tensor], **args: object) -> pathlib.Path:
    """Saved like FSFM's util/misc.py save_model: model, optimizer, epoch, scaler, args (a Namespace)."""
    defaults = dict(
        model="vit_tiny_patch16",
        input_size=224,
        nb_classes=2,
        normalize_from_IMN=False,
        global_pool=True,
        output_dir=pathlib.Path("/checkpoint/user/experiments_finetune/1234"),  # a Path, as the script stores it
    )
    namespace = argparse.Namespace(**(defaults | args))
    torch.save(
        {
            "model": model_state,
            "optimizer": {
                "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(4), "exp_avg_sq": torch.zeros(4)}},
                "param_groups": [{"lr": 1e-4, "weight_decay": 0.05, "lr_scale": 0.65, "params": [0]}],
            },
            "epoch": 9,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000},
            "args": namespace,
        },
        path,
    )
    return path


def assembled(state: dict[str, torch.Tensor], img_size: int = 224) -> torch.nn.Module:
    model = build_fsfm_vit("tiny", img_size=img_size)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> pathlib.Path:
    return official_checkpoint(tmp_path_factory.mktemp("ft") / "checkpoint-min_val_loss.pth", finetune_state())


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> pathlib.Path:
    return official_checkpoint(tmp_path_factory.mktemp("pt") / "checkpoint-400.pth", pretrain_state())


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))


def outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model.forward_with_embedding(x)


def test_official_finetune_loads_exactly(finetuned, images):
    loaded = load_checkpoint(finetuned)
    meta = loaded.meta
    assert (meta.arch, meta.name, meta.img_size) == ("tiny", "fsfm-vit-tiny", 224)
    assert (meta.source, meta.trained, meta.fake_index, meta.class_names) == ("fsfm-finetune", True, 0, ("fake", "real"))
    assert (meta.mean, meta.std) == (VGGFACE2_MEAN, VGGFACE2_STD)
    assert meta.path == str(finetuned) and meta.threshold is None
    assert re.fullmatch(r"[0-9a-f]{12}", meta.digest)
    logits, embedding = outputs(loaded.model, images)
    ref_logits, ref_embedding = outputs(assembled(finetune_state()), images)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(embedding, ref_embedding)
    assert meta.to_dict()["mean"] == list(VGGFACE2_MEAN)
    assert load_checkpoint(finetuned, arch="tiny").meta.digest == meta.digest


def test_official_pretrain_keeps_the_encoder_and_drops_the_rest(pretrained, images):
    loaded = load_checkpoint(pretrained)
    meta = loaded.meta
    assert (meta.source, meta.trained, meta.arch) == ("fsfm-pretrain", False, "tiny")
    keys = set(loaded.model.state_dict())
    assert not any(k.startswith(("decoder_", "rep_decoder_", "projector.", "predictor.", "mask_token", "norm.")) for k in keys)
    # Fresh fc_norm (identity affine) and a near-zero head, as FSFM's fine-tuning starts.
    torch.testing.assert_close(loaded.model.fc_norm.weight, torch.ones(DIM))
    torch.testing.assert_close(loaded.model.fc_norm.bias, torch.zeros(DIM))
    assert 0 < loaded.model.head.weight.std() < 1e-4
    encoder_keys = encoder_state(0).keys()
    encoder = {k: v for k, v in pretrain_state().items() if k in encoder_keys}
    ref = build_fsfm_vit("tiny")
    missing = ref.load_state_dict(encoder, strict=False).missing_keys
    assert set(missing) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    _, embedding = outputs(loaded.model, images)
    _, ref_embedding = outputs(ref.eval(), images)
    torch.testing.assert_close(embedding, ref_embedding)
    assert load_checkpoint(pretrained).meta.digest == meta.digest  # the fresh head is seeded


def test_refuses_a_checkpoint_pickling_another_class(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": finetune_state(), "args": Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused to load: it pickles \S*_touch") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


class Payload:
    """Unpickling this would create a file: the load must refuse before that."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path: str) -> None:
    pathlib.Path(path).touch()


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pth"):
        load_checkpoint(tmp_path / "nope.pth")


def test_not_a_torch_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"junk\.pth: not a torch checkpoint"):
        load_checkpoint(path)


def test_unknown_layout(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"weights": finetune_state()}, path)
    with pytest.raises(CheckpointError, match=r"weights\.pth: unknown checkpoint layout"):
        load_checkpoint(path)


def test_architecture_mismatch_names_both(finetuned):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(finetuned, arch="base")
    assert str(err.value) == f"checkpoint {finetuned} holds a ViT-Ti (dim 192, depth 12) but arch 'base' was asked for"


def test_missing_and_unexpected_keys(tmp_path):
    state = finetune_state()
    del state["blocks.3.mlp.fc1.weight"]
    path = official_checkpoint(tmp_path / "missing.pth", state)
    expected = r"missing\.pth: weights do not fit a ViT-Ti: missing 1 keys \(blocks\.3\.mlp\.fc1\.weight\)"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    state = finetune_state() | {"extra.weight": torch.zeros(3)}
    path = official_checkpoint(tmp_path / "unexpected.pth", state)
    with pytest.raises(CheckpointError, match=r"unexpected 1 keys \(extra\.weight\)"):
        load_checkpoint(path)


@pytest.mark.parametrize("img_size", [112, 256])
def test_pos_embed_is_interpolated_bicubic(finetuned, img_size):
    loaded = load_checkpoint(finetuned, img_size=img_size)
    grid = img_size // 16
    assert loaded.meta.img_size == img_size
    assert loaded.model.pos_embed.shape == (1, 1 + grid * grid, DIM)
    original = finetune_state()["pos_embed"]  # [1, 197, D]
    torch.testing.assert_close(loaded.model.pos_embed[:, :1], original[:, :1])
    patch = original[:, 1:].reshape(1, 14, 14, DIM).permute(0, 3, 1, 2)
    expected = F.interpolate(patch, size=(grid, grid), mode="bicubic", align_corners=False)
    torch.testing.assert_close(loaded.model.pos_embed[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, grid * grid, DIM))
    logits, embedding = outputs(loaded.model, torch.randn(2, 3, img_size, img_size))
    assert logits.shape == (2, 2) and embedding.shape == (2, DIM) and torch.isfinite(logits).all()


def test_mean_std_file_beside_the_checkpoint(tmp_path):
    path = official_checkpoint(tmp_path / "checkpoint-9.pth", finetune_state())
    (tmp_path / "pretrain_ds_mean_std.txt").write_text(json.dumps({"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.15]}) + "\n")
    meta = load_checkpoint(path).meta
    assert (meta.mean, meta.std) == ((0.5, 0.4, 0.3), (0.25, 0.2, 0.15))
    (tmp_path / "pretrain_ds_mean_std.txt").write_text("mean=0.5\n")
    with pytest.raises(CheckpointError, match="pretrain_ds_mean_std.txt: expected"):
        load_checkpoint(path)


def test_normalize_from_imagenet_flag_is_honoured(tmp_path):
    path = official_checkpoint(tmp_path / "imn.pth", finetune_state(), normalize_from_IMN=True)
    assert load_checkpoint(path).meta.mean == IMAGENET_MEAN


def test_streamguard_round_trip(finetuned, tmp_path, images):
    loaded = load_checkpoint(finetuned)
    loaded = dataclasses.replace(loaded, meta=dataclasses.replace(loaded.meta, threshold=0.7, mean=(0.1, 0.2, 0.3)))
    path = save_checkpoint(tmp_path / "out" / "streamguard.pt", loaded, extra={"epochs": 3, "lr": 1e-4})
    # Plain types only: loads with weights_only and no allow-list at all.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "streamguard.checkpoint.v1" and raw["config"] == {"epochs": 3, "lr": 1e-4}
    again = load_checkpoint(path)
    assert again.meta.source == "streamguard" and again.meta.path == str(path)
    assert dataclasses.replace(again.meta, source="fsfm-finetune", path=str(finetuned)) == loaded.meta
    for a, b in zip(outputs(again.model, images), outputs(loaded.model, images)):
        torch.testing.assert_close(a, b)
    at_256 = load_checkpoint(path, img_size=256)
    assert at_256.model.pos_embed.shape == (1, 257, DIM)


def test_save_refuses_non_plain_extra(finetuned, tmp_path):
    with pytest.raises(ValueError, match="plain JSON types"):
        save_checkpoint(tmp_path / "x.pt", untrained_model("tiny", img_size=32), extra={"path": pathlib.Path("/x")})


def test_untrained_model_is_deterministic():
    a, b, c = (untrained_model("tiny", seed=s, img_size=32) for s in (0, 0, 1))
    assert a.meta.digest == b.meta.digest != c.meta.digest
    assert (a.meta.trained, a.meta.source, a.meta.path) == (False, "untrained", None)
    torch.testing.assert_close(a.model.pos_embed, b.model.pos_embed)

"""Layer-wise lr decay groups, weight-decay exclusions, and the warm-up + cosine schedule."""

import math

import pytest
import torch

from streamguard.model.fsfm import build_fsfm_vit
from training.config import OptimConfig
from training.fit import lr_factor
from training.model import Detector, TimmNet, param_groups

LR = 1e-3


def _lr_of(groups: list[dict]) -> dict[int, tuple[float, float]]:
    """id(param) -> (lr, weight decay) of the one group holding it."""
    out: dict[int, tuple[float, float]] = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in out, "a parameter sits in two groups"
            out[id(p)] = (g["lr"], g["weight_decay"])
    return out


def test_fsfm_vit_groups_follow_fsfm_layer_decay_and_skip_decay_on_norms_biases_and_tokens():
    model = Detector(build_fsfm_vit("tiny", img_size=32), attribution_classes=3)
    decay = 0.65
    groups = param_groups(model, OptimConfig(layer_decay=decay, weight_decay=0.05), LR)
    lr = _lr_of(groups)
    depth = len(model.net.blocks)  # 12: layers 0 (embeddings) .. 13 (head)
    assert set(lr) == {id(p) for p in model.parameters()}
    for name, p in model.named_parameters():
        if name.startswith("net.blocks."):
            expected = decay ** (depth - int(name.split(".")[2]))  # block i is layer i + 1 of depth + 1
        elif name.startswith(("net.patch_embed", "net.pos_embed", "net.cls_token")):
            expected = decay ** (depth + 1)
        else:  # fc_norm, head, attribution head: full lr
            expected = 1.0
        assert lr[id(p)][0] == pytest.approx(LR * expected), name
        no_decay = p.ndim == 1 or name.endswith((".bias", "pos_embed", "cls_token"))
        assert lr[id(p)][1] == (0.0 if no_decay else 0.05), name


def test_timm_cnn_groups_decay_from_the_head_down_to_the_stem():
    model = Detector(TimmNet("resnet10t", 2))
    lr = _lr_of(param_groups(model, OptimConfig(layer_decay=0.5), LR))
    named = dict(model.named_parameters())
    stem, head = named["net.net.conv1.0.weight"], named["net.net.fc.weight"]
    last_stage = named["net.net.layer4.0.conv1.weight"]
    assert lr[id(head)][0] == LR
    assert lr[id(stem)][0] < lr[id(last_stage)][0] < LR


def test_layer_decay_one_gives_every_group_the_same_lr():
    model = Detector(build_fsfm_vit("tiny", img_size=32))
    assert {g["lr"] for g in param_groups(model, OptimConfig(layer_decay=1.0), LR)} == {LR}


def test_schedule_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    warmup, total, floor = 10, 110, 0.01
    assert lr_factor(0, warmup, total, floor) == 0.0
    assert lr_factor(5, warmup, total, floor) == pytest.approx(0.5)
    assert lr_factor(10, warmup, total, floor) == pytest.approx(1.0)
    assert lr_factor(60, warmup, total, floor) == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_factor(110, warmup, total, floor) == pytest.approx(floor)


def test_scheduler_keeps_the_layer_ratios():
    model = Detector(build_fsfm_vit("tiny", img_size=32))
    groups = param_groups(model, OptimConfig(), LR)
    opt = torch.optim.AdamW(groups, lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 2, 10, 0.0))
    for _ in range(5):
        opt.step()
        sched.step()
    ratios = {round(g["lr"] / opt.param_groups[-1]["lr"], 9) for g in opt.param_groups}
    assert ratios == {round(g["lr_scale"], 9) for g in groups}

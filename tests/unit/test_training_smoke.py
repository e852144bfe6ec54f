"""The smoke run (configs/train/smoke.yaml): the machinery learns, end to end, through the CLI.

No deepfake data set or pretrained weights can be had here, so: real faces shipped in
packages plus their self-blended fakes, a small timm ResNet trained from scratch for
about a minute, then checks that could fail: the loss falls, the AUC on fresh draws
(new poses, new blends, never seen in training) is at least 0.8, and the exported
engine, opened by the runtime, scores those held-out fakes above the reals.
"""


import numpy as np
import torch

from streamguard.config import ModelConfig
from streamguard.inference.registry import open_engine
from streamguard.inference.contract import read_sidecar
from training.cli import main
from training.datasets import CropDataset
from training.index import read_index
from training.runlog import read_csv
from tests.support import REPO

CONFIG = REPO / "configs" / "train" / "smoke.yaml"
SIZE = 64  # data.img_size of the smoke config


def test_smoke_config_learns_evaluates_exports_and_the_runtime_agrees(tmp_path, capsys):
    run, held_out, engines = tmp_path / "run", tmp_path / "held_out", tmp_path / "engines" / "smoke"
    assert main(["fit", "--config", str(CONFIG), "--out", str(run)]) == 0

    losses = np.array([float(r["loss"]) for r in read_csv(run / "steps.csv")])
    third = len(losses) // 3
    assert losses[-third:].mean() < losses[:third].mean() - 0.05, "the training loss did not fall"
    assert (run / "training.png").stat().st_size > 0

    # Fresh held-out draws: a seed neither training (0) nor validation (1) used.
    assert main(["sample-set", "--out", str(held_out), "--reals", "96", "--fakes", "96", "--seed", "7", "--size", str(SIZE)]) == 0
    assert main(["eval", "--checkpoint", str(run / "last.pth"), "--data", str(held_out / "index.csv"), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    all_row = next(line for line in printed.splitlines() if line.startswith("all "))
    frame_auc = float(all_row.split()[3])
    assert frame_auc >= 0.8, f"held-out frame AUC {frame_auc:.3f} < 0.8:\n{printed}"

    assert main(["export", "--checkpoint", str(run / "last.pth"), "--out", str(engines)]) == 0
    onnx = engines / "model.onnx"
    sidecar = read_sidecar(onnx)
    assert sidecar.meta.threshold is not None and sidecar.meta.trained  # eval's threshold travelled with the export

    engine = open_engine(ModelConfig(engine=onnx), img_size=SIZE)  # the runtime, as `streamguard run --engine`
    try:
        data = CropDataset(read_index(held_out / "index.csv"), SIZE)
        crops = torch.stack([data[i][0] for i in range(len(data))]).permute(0, 2, 3, 1).numpy()  # uint8 NHWC
        p_fake, embedding = engine.infer(crops)
    finally:
        engine.close()
    fake = data.targets == 0
    assert embedding.shape[0] == len(crops)
    assert p_fake[fake].mean() > p_fake[~fake].mean(), (p_fake[fake].mean(), p_fake[~fake].mean())

"""`fit`, `eval` and the config on tiny runs: checkpoints the runtime loads, resuming, FSFM init, errors."""

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from streamguard.config import ModelConfig
from streamguard.errors import ConfigError
from streamguard.inference.registry import open_engine
from streamguard.model.checkpoint import MEAN_STD_FILE, load_checkpoint, untrained_model
from training.cli import main
from training.config import ModelSection, TrainConfig, load_train_config
from training.datasets import CropDataset
from training.evaluate import evaluate
from training.fit import Trainer, fit
from training.index import read_index
from training.model import build_net
from training.predict import predict
from training.runlog import read_csv
from tests.support import REPO

SIZE = 32
CONFIGS = REPO / "configs" / "train"


def tiny_config(out: Path, **sections) -> TrainConfig:
    faces = {"identities": ["astronaut", "grace_hopper"], "reals": 8, "seed": 0}
    data = {
        "img_size": SIZE,
        "train": {"sample_faces": faces},
        "val": {"sample_faces": {**faces, "fakes": 8, "seed": 1, "frames_per_video": 2}},
        "sbi": True,
    }
    base = {
        "name": "tiny",
        "data": data,
        "model": {"family": "fsfm", "arch": "tiny", "drop_path": 0.1},
        "batch": {"size": 8},
        "optim": {"epochs": 1, "steps_per_epoch": 2, "warmup_epochs": 0.5, "blr": 0.01},
        "augment": {"degrade": {"h264_p": 0.5}, "scale": [0.5, 1.0]},
        "run": {"out_dir": str(out), "workers": 0, "threads": 1},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return TrainConfig.model_validate(base)


def test_fsfm_vit_run_writes_a_checkpoint_the_runtime_loads_and_scores_identically(tmp_path):
    result = fit(tiny_config(tmp_path))
    assert result.epochs_done == 1 and result.val_frame_auc is not None
    assert len(read_csv(tmp_path / "steps.csv")) == 2 and len(read_csv(tmp_path / "epochs.csv")) == 1
    assert (tmp_path / "training.png").stat().st_size > 0

    loaded = load_checkpoint(result.checkpoint, img_size=SIZE)  # the runtime's own loader
    assert loaded.meta.source == "streamguard" and loaded.meta.trained
    assert loaded.meta.class_names == ("fake", "real") and loaded.meta.fake_index == 0
    engine = open_engine(ModelConfig(checkpoint=result.checkpoint, precision="fp32"), img_size=SIZE)
    records = read_index(tmp_path / "data" / "val" / "index.csv")
    data = CropDataset(records, SIZE)
    crops = torch.stack([data[i][0] for i in range(len(data))]).permute(0, 2, 3, 1).numpy()
    p_runtime, _ = engine.infer(crops)
    engine.close()
    p_training = predict(loaded.model, loaded.meta, DataLoader(data, batch_size=5), torch.device("cpu"))
    np.testing.assert_allclose(p_training, p_runtime, atol=1e-5)


def test_eval_writes_the_calibrated_threshold_where_the_runtime_reads_it(tmp_path):
    result = fit(tiny_config(tmp_path))
    index = tmp_path / "data" / "val" / "index.csv"
    ev = evaluate(result.checkpoint, index, target_fpr=0.25, workers=0)
    assert ev.checkpoint == result.checkpoint
    assert load_checkpoint(result.checkpoint, img_size=SIZE).meta.threshold == pytest.approx(ev.threshold)
    report = json.loads((ev.out_dir / "eval.json").read_text())
    assert set(report["by_source"]) == {"astronaut", "grace_hopper"} and set(report["by_manipulation"]) == {"sbi"}
    assert (ev.out_dir / "roc.png").stat().st_size > 0 and (ev.out_dir / "scores.csv").is_file()
    video_scores: dict[str, list[float]] = {}
    for row in read_csv(ev.out_dir / "scores.csv"):
        if row["label"] == "real":
            video_scores.setdefault(row["video"], []).append(float(row["p_fake"]))
    fpr = np.mean([np.mean(v) >= ev.threshold + 1e-7 for v in video_scores.values()])  # scores.csv keeps 9 digits
    assert fpr <= 0.25


def test_a_second_run_resumes_after_the_last_epoch_and_refuses_a_changed_model(tmp_path):
    fit(tiny_config(tmp_path))
    trainer = Trainer(tiny_config(tmp_path, optim={"epochs": 2}))
    result = trainer.fit()
    assert result.epochs_done == 2 and trainer.step == 4
    assert [r["epoch"] for r in read_csv(tmp_path / "epochs.csv")] == ["1", "2"]
    assert [int(r["step"]) for r in read_csv(tmp_path / "steps.csv")] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="different model settings"):
        Trainer(tiny_config(tmp_path, model={"drop_path": 0.0})).fit()


def test_metric_learning_run_logs_triplet_and_attribution_losses(tmp_path):
    cfg = tiny_config(
        tmp_path,
        data={"attribution": "source"},
        loss={"triplet": {"variant": "batch_all", "margin": 0.3}},
        batch={"sampler": "pk", "classes": "label", "p": 2},
        model={"family": "timm", "arch": "test_resnet", "drop_path": 0.0},
    )
    fit(cfg)
    rows = read_csv(tmp_path / "steps.csv")
    assert all(r["triplet"] != "" and r["attribution"] != "" for r in rows)
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_fsfm_init_takes_the_pretrained_encoder_and_its_normalisation(tmp_path):
    encoder = untrained_model("tiny", seed=5, img_size=224).model.state_dict()
    state = {k: v for k, v in encoder.items() if not k.startswith(("head.", "fc_norm."))}
    state["decoder_embed.weight"] = torch.zeros(2, 2)  # pretraining-only keys are dropped
    ckpt = tmp_path / "checkpoint-400.pth"
    torch.save({"model": state, "args": argparse.Namespace(normalize_from_IMN=False), "epoch": 400}, ckpt)
    (tmp_path / MEAN_STD_FILE).write_text('{"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}\n')
    start = build_net(ModelSection(family="fsfm", arch="tiny", init=ckpt), img_size=SIZE)
    assert torch.equal(start.model.patch_embed.proj.weight, encoder["patch_embed.proj.weight"])
    assert start.model.pos_embed.shape[1] == 1 + (SIZE // 16) ** 2  # resized to the training size
    assert start.meta.mean == (0.5, 0.4, 0.3) and start.meta.std == (0.2, 0.25, 0.3)


def test_config_errors_are_one_line_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train: {index: x.csv}}\noptim: {epocs: 3}\n")
    assert main(["fit", "--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"streamguard-train: error: {bad}: invalid value for 'optim.epocs': unknown field"
    with pytest.raises(ValueError, match="cannot be combined with a triplet"):
        tiny_config(tmp_path, augment={"mixup": 0.8}, loss={"triplet": {"variant": "batch_hard"}})
    with pytest.raises(ValueError, match="not a multiple of batch.p"):
        tiny_config(tmp_path, batch={"sampler": "pk", "p": 3})


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_training_configs_are_valid_and_named_after_their_file(path):
    assert load_train_config(path).name == path.stem

"""Training data: manifests, the crop index, self-blended fakes, degradations, datasets."""

import json

import numpy as np
import pytest
import torch

from streamguard.errors import ConfigError
from training.augment import CropAugment
from training.config import AugmentConfig, DegradeConfig, SampleFacesConfig
from training.datasets import FAKE, REAL, CropDataset, attribution_classes
from training.degrade import gaussian_noise, h264, jpeg, random_degrade, resample
from training.index import CropRecord, read_index, write_index
from training.manifest import read_manifest
from training.sample_faces import draw_real, identities, write_sample_set
from training.sbi import face_mask, self_blend


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    return draw_real(identities()["astronaut"], 96, np.random.default_rng(0))


# --- self-blended images ----------------------------------------------------------


def test_face_mask_covers_the_face_centre_and_not_the_crop_corners():
    for seed in range(5):
        m = face_mask(112, np.random.default_rng(seed))
        assert m.dtype == np.float32 and m.shape == (112, 112)
        assert 0.0 <= m.min() and m.max() <= 1.0
        assert m[60, 56] > 0.9  # the face centre of a 1.3x crop
        assert m[:8, :8].max() < 0.05 and m[-8:, -8:].max() < 0.05


def test_self_blend_changes_the_face_and_depends_only_on_the_rng(face):
    for seed in range(5):
        fake = self_blend(face, np.random.default_rng(seed))
        assert fake.shape == face.shape and fake.dtype == np.uint8
        diff = np.abs(fake.astype(int) - face.astype(int)).mean(axis=2)
        assert diff[30:70, 30:66].mean() > 0.5  # something was blended into the face
        assert np.array_equal(fake, self_blend(face, np.random.default_rng(seed)))


# --- degradations -----------------------------------------------------------------


def test_compression_keeps_the_picture_but_changes_pixels(face):
    for out in (jpeg(face, 40), h264(face, 30)):
        assert out.shape == face.shape and out.dtype == np.uint8
        assert 24 < _psnr(out, face) < 60


def test_h264_is_lossier_at_a_higher_crf_and_takes_odd_sizes(face):
    assert _psnr(h264(face, 45), face) < _psnr(h264(face, 20), face)
    odd = face[:95, :93]
    assert h264(odd, 30).shape == odd.shape


def test_resample_and_noise_degrade_but_keep_shape(face):
    assert _psnr(resample(face, 0.3), face) < _psnr(resample(face, 0.8), face) < 60
    noisy = gaussian_noise(face, 5.0, np.random.default_rng(0))
    assert noisy.shape == face.shape and 30 < _psnr(noisy, face) < 40


def test_random_degrade_is_identity_with_all_probabilities_zero(face):
    off = DegradeConfig(noise_p=0, blur_p=0, resample_p=0, jpeg_p=0, h264_p=0)
    assert np.array_equal(random_degrade(face, off, np.random.default_rng(0)), face)
    every = DegradeConfig(noise_p=1, blur_p=1, resample_p=1, jpeg_p=0, h264_p=1)
    assert _psnr(random_degrade(face, every, np.random.default_rng(0)), face) < 35


def test_degrade_config_refuses_two_compressions_and_reversed_ranges():
    with pytest.raises(ValueError, match="compressed once"):
        DegradeConfig(jpeg_p=0.6, h264_p=0.6)
    with pytest.raises(ValueError, match="blur_sigma"):
        DegradeConfig(blur_sigma=(2.0, 1.0))


# --- index and manifests ------------------------------------------------------------


def test_index_round_trips_with_relative_paths(tmp_path):
    (tmp_path / "crops").mkdir()
    records = [
        CropRecord(tmp_path / "crops" / "a.png", "v1", "real", "real", "ff", "train", 0),
        CropRecord(tmp_path / "crops" / "b.png", "v2", "fake", "FF-DF", "ff", "test", 3),
    ]
    index = write_index(tmp_path / "index.csv", records)
    assert "crops/a.png" in index.read_text()
    assert read_index(index) == records
    assert read_index(index, "test") == records[1:]
    with pytest.raises(ConfigError, match="no crops in split 'val'"):
        read_index(index, "val")


def test_index_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "index.csv"
    bad.write_text("crop,video,label,manipulation,source,split,frame\na.png,v,maybe,,s,train,0\n")
    with pytest.raises(ConfigError, match=r"index.csv line 2: label must be real or fake, got 'maybe'"):
        read_index(bad)


def test_csv_manifest_fills_defaults_and_rejects_bad_labels(tmp_path):
    m = tmp_path / "set.csv"
    m.write_text("path,label,manipulation,source,split\nv/a.mp4,real,,,train\nv/b.mp4,FAKE,DF,ff,test\n")
    a, b = read_manifest(m)
    assert (a.label, a.manipulation, a.source, a.split) == ("real", "real", "set", "train")
    assert (b.label, b.manipulation, b.source) == ("fake", "DF", "ff") and b.path == tmp_path / "v" / "b.mp4"
    m.write_text("path,label,manipulation,source,split\nv/a.mp4,genuine,,,train\n")
    with pytest.raises(ConfigError, match="set.csv line 2: label must be real or fake"):
        read_manifest(m)


def test_deepfakebench_json_with_and_without_a_compression_level(tmp_path):
    frames = ["f/0.png", "f/1.png"]
    data = {
        "FaceForensics++": {
            "FF-real": {"train": {"c23": {"000": {"label": "FF-real", "frames": frames}}}},
            "FF-DF": {"train": {"c23": {"000_003": {"label": "FF-DF", "frames": frames}}, "c40": {"x": {"frames": frames}}}},
        },
        "Celeb-DF-v2": {"CelebDFv2_fake": {"test": {"id0_id1_0000": {"label": "CelebDFv2_fake", "frames": frames}}}},
    }
    path = tmp_path / "ff.json"
    path.write_text(json.dumps(data))
    entries = read_manifest(path)
    assert [(e.source, e.manipulation, e.label, e.split) for e in entries] == [
        ("FaceForensics++", "FF-real", "real", "train"),
        ("FaceForensics++", "FF-DF", "fake", "train"),
        ("Celeb-DF-v2", "CelebDFv2_fake", "fake", "test"),
    ]
    assert entries[0].frames == (tmp_path / "f" / "0.png", tmp_path / "f" / "1.png")
    assert len({e.key for e in entries}) == 3


# --- sample faces and datasets --------------------------------------------------------


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("sample")
    cfg = SampleFacesConfig(identities=["astronaut", "cameraman"], reals=8, fakes=4, seed=3, frames_per_video=2)
    return write_sample_set(out, cfg, 64, split="val"), cfg


def test_sample_set_writes_reals_and_blended_fakes_grouped_into_videos(sample_index):
    index, _ = sample_index
    records = read_index(index)
    assert sum(r.label == "real" for r in records) == 8 and sum(r.label == "fake" for r in records) == 4
    assert {r.source for r in records} == {"astronaut", "cameraman"}
    assert all(r.manipulation == ("sbi" if r.label == "fake" else "real") for r in records)
    videos = {}
    for r in records:
        videos.setdefault(r.video, set()).add((r.label, r.source))
    assert all(len(v) == 1 for v in videos.values()) and len(videos) == 6  # 2 frames per pseudo-video


def test_dataset_adds_one_blended_fake_per_real_with_labels_and_attribution(sample_index):
    records = read_index(sample_index[0])
    names = attribution_classes(records, "manipulation", sbi=True)
    assert names == ["real", "sbi"]
    ds = CropDataset(records, 48, sbi=True, attribution="manipulation", attribution_names=names)
    assert len(ds) == 12 + 8
    assert (ds.targets == FAKE).sum() == 4 + 8 and (ds.targets == REAL).sum() == 8
    x, target, attr = ds[len(ds) - 1]  # a blended fake
    assert x.dtype == torch.uint8 and x.shape == (3, 48, 48)  # 64 px crops resized to the model's 48
    assert target == FAKE and names[attr] == "sbi"
    ds.set_epoch(0)
    first = ds[len(ds) - 1][0]
    ds.set_epoch(1)
    assert not torch.equal(first, ds[len(ds) - 1][0])  # a fresh blend each epoch
    ds.set_epoch(0)
    assert torch.equal(first, ds[len(ds) - 1][0])  # and the same one again for the same epoch


def test_crop_augment_returns_uint8_chw_at_the_model_size(face):
    for fsfm in (True, False):
        out = CropAugment(AugmentConfig(fsfm=fsfm), 64)(face, np.random.default_rng(0))
        assert out.dtype == torch.uint8 and out.shape == (3, 64, 64)

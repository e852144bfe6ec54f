"""The torch engine: uint8 crops in, P(fake) and embeddings out, normalisation inside."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from streamguard.config import ModelConfig
from streamguard.errors import CheckpointError
from streamguard.inference import open_engine
from streamguard.inference.torch_engine import TorchEngine, cpu_has_native_bf16
from streamguard.model import save_checkpoint, untrained_model

SIZE = 64  # small crops keep the tiny ViT fast


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(8, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def engine() -> TorchEngine:
    return open_engine(ModelConfig(arch="tiny"), img_size=SIZE)


def test_outputs(engine, crops):
    p_fake, embedding = engine.infer(crops)
    assert p_fake.shape == (8,) and p_fake.dtype == np.float32
    assert embedding.shape == (8, 192) and embedding.dtype == np.float32
    assert ((p_fake >= 0) & (p_fake <= 1)).all()
    assert np.ptp(p_fake) > 0  # different crops, different scores
    assert (engine.embed_dim, engine.input_size) == (192, SIZE)
    assert (engine.meta.source, engine.meta.arch, engine.meta.trained) == ("untrained", "tiny", False)


def test_normalisation_and_fake_column(engine, crops):
    loaded = untrained_model("tiny", seed=0, img_size=SIZE)
    mean = torch.tensor(loaded.meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.meta.std).view(1, 3, 1, 1)
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        logits, embedding = loaded.model.forward_with_embedding(x)
    p_fake, emb = engine.infer(crops)
    np.testing.assert_allclose(p_fake, logits.softmax(-1)[:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(emb, embedding.numpy(), atol=1e-5)
    # P(fake) is read from meta.fake_index.
    flipped = TorchEngine(dataclasses.replace(loaded, meta=dataclasses.replace(loaded.meta, fake_index=1)))
    np.testing.assert_allclose(flipped.infer(crops)[0], 1 - p_fake, atol=1e-6)


def test_bf16_is_close_to_fp32(engine, crops, caplog):
    bf16 = open_engine(ModelConfig(arch="tiny", precision="bf16"), img_size=SIZE)
    assert ("no native bf16" in caplog.text) == (not cpu_has_native_bf16())
    p32, e32 = engine.infer(crops)
    p16, e16 = bf16.infer(crops)
    assert np.abs(p16 - p32).max() < 0.05
    cosine = (e16 * e32).sum(1) / np.linalg.norm(e16, axis=1) / np.linalg.norm(e32, axis=1)
    assert cosine.min() > 0.99


def test_rejects_bad_crops(engine, crops):
    with pytest.raises(ValueError, match="must be uint8"):
        engine.infer(crops.astype(np.float32))
    with pytest.raises(ValueError, match=r"must be \[N, 64, 64, 3\] RGB, got shape \[8, 32, 32, 3\]"):
        engine.infer(crops[:, :32, :32])
    with pytest.raises(ValueError, match="got shape"):
        engine.infer(crops[0])


def test_empty_batch(engine, crops):
    p_fake, embedding = engine.infer(crops[:0])
    assert p_fake.shape == (0,) and embedding.shape == (0, 192)


def test_threads_setting():
    before = torch.get_num_threads()
    try:
        TorchEngine(untrained_model("tiny", img_size=32), threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_open_engine_by_extension(tmp_path, crops, engine):
    path = save_checkpoint(tmp_path / "model.pt", untrained_model("tiny", seed=0, img_size=SIZE))
    from_file = open_engine(ModelConfig(checkpoint=path), img_size=SIZE)
    assert from_file.meta.source == "streamguard" and from_file.meta.digest == engine.meta.digest
    np.testing.assert_allclose(from_file.infer(crops)[0], engine.infer(crops)[0], atol=1e-6)
    with pytest.raises(CheckpointError, match=r"model\.xyz: unsupported checkpoint type '\.xyz'"):
        open_engine(ModelConfig(checkpoint=tmp_path / "model.xyz"))


def test_closed_engine_refuses(crops):
    engine = TorchEngine(untrained_model("tiny", img_size=SIZE))
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.infer(crops)

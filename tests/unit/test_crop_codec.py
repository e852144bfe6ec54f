"""cluster.crop_codec: crops cross nodes as raw uint8 or JPEG, and come back as the engine takes them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lab.bench.model import face_crops
from streamguard.cluster.crop_codec import JpegCrops, decode, encode, payload_bytes
from streamguard.inference.contract import check_crops


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return face_crops(6, 224, seed=5)


def test_raw_is_the_array_itself(crops) -> None:
    payload = encode(crops, "raw", 90)
    assert payload is crops and payload_bytes(payload) == crops.nbytes
    frozen = crops.copy()
    frozen.flags.writeable = False  # as an array out of Ray's object store
    assert decode(frozen) is frozen


def test_jpeg_round_trip_is_close_and_much_smaller(crops) -> None:
    payload = encode(crops, "jpeg", 90)
    assert isinstance(payload, JpegCrops) and len(payload) == len(crops)
    assert payload_bytes(payload) < crops.nbytes / 5
    back = decode(payload)
    check_crops(back, 224)
    assert back.flags.writeable
    error = np.abs(back.astype(np.int16) - crops.astype(np.int16))
    assert error.mean() < 3.0  # quality 90 on real faces: a few levels on average
    assert decode(encode(crops, "jpeg", 50)).shape == crops.shape


def test_lower_quality_is_smaller(crops) -> None:
    sizes = [payload_bytes(encode(crops, "jpeg", q)) for q in (50, 70, 90, 95)]
    assert sizes == sorted(sizes)


def test_a_jpeg_of_another_size_is_refused(crops) -> None:
    buf = io.BytesIO()
    Image.fromarray(crops[0][:100, :100]).save(buf, format="JPEG")
    with pytest.raises(ValueError, match="expected RGB 224x224"):
        decode(JpegCrops(224, (buf.getvalue(),)))


def test_unknown_transport_and_payload_are_errors(crops) -> None:
    with pytest.raises(ValueError, match="unknown crop transport"):
        encode(crops, "png", 90)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a crop payload"):
        decode([b"..."])  # type: ignore[arg-type]

"""How a shard's crops cross nodes to the shared model: raw uint8, or one JPEG per crop.

A 224 px crop is 150 kB raw; a shard sending 16 crops 5 times a second ships 12 MB/s,
and every request's array passes through Ray's object store on both nodes. JPEG at
quality 90 is about a tenth of that, for a few hundred microseconds of encoding on the
shard and decoding on the model's node; the price is pixels that are no longer exactly
the ones the detector would have seen. `lab/bench/model_service.py` measures both
(bytes, milliseconds, P(fake) and embedding drift) and docs/benchmarks.md holds the
figures the default was chosen by.

Pillow encodes and decodes (libjpeg-turbo in its wheels; already installed for
matplotlib and scikit-image): explicitly RGB, 4:2:0 chroma, no optimisation pass.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np

Transport = Literal["raw", "jpeg"]


@dataclass(frozen=True)
class JpegCrops:
    """N crops as N JPEG files, all `size` x `size` RGB."""

    size: int
    blobs: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.blobs)

    def __len__(self) -> int:
        return len(self.blobs)


# What travels: the crops themselves (raw), or their JPEGs.
CropPayload = np.ndarray | JpegCrops


def encode_jpeg(crops: np.ndarray, quality: int) -> JpegCrops:
    """uint8 [N, S, S, 3] RGB -> N JPEGs at `quality`."""
    from PIL import Image

    blobs = []
    for crop in crops:
        buf = io.BytesIO()
        Image.fromarray(crop, "RGB").save(buf, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False)
        blobs.append(buf.getvalue())
    return JpegCrops(int(crops.shape[1]), tuple(blobs))


def decode_jpeg(payload: JpegCrops) -> np.ndarray:
    """N JPEGs -> uint8 [N, S, S, 3] RGB (a new, writable array)."""
    from PIL import Image

    out = np.empty((len(payload.blobs), payload.size, payload.size, 3), np.uint8)
    for i, blob in enumerate(payload.blobs):
        with Image.open(io.BytesIO(blob)) as image:
            if image.size != (payload.size, payload.size) or image.mode != "RGB":
                raise ValueError(f"crop {i}: a {image.mode} {image.size[0]}x{image.size[1]} JPEG, expected RGB {payload.size}x{payload.size}")
            out[i] = np.asarray(image)
    return out


def encode(crops: np.ndarray, transport: Transport, quality: int) -> CropPayload:
    """The payload that carries `crops` by `transport` (raw: the array itself, contiguous)."""
    if transport == "raw":
        return np.ascontiguousarray(crops)
    if transport == "jpeg":
        return encode_jpeg(crops, quality)
    raise ValueError(f"unknown crop transport {transport!r}")


def decode(payload: CropPayload) -> np.ndarray:
    """The crops a payload carries. A raw array that came out of Ray's object store is read-only;
    it is returned as it is (the engines copy what they must not share: `host_tensor`)."""
    if isinstance(payload, JpegCrops):
        return decode_jpeg(payload)
    if isinstance(payload, np.ndarray):
        return payload
    raise ValueError(f"not a crop payload: {type(payload).__name__}")


def payload_bytes(payload: CropPayload) -> int:
    """Bytes of crop data a payload carries across the network."""
    return payload.nbytes if isinstance(payload, (np.ndarray, JpegCrops)) else 0

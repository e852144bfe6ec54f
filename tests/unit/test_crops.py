import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.faces.crops import crop_face, normalise_box, square_crop_box


def test_square_crop_box_is_centred_with_side_scale_times_longest_side():
    box = np.array([100, 50, 140, 130], dtype=np.float32)  # 40 x 80, centre (120, 90)
    crop = square_crop_box(box, 640, 480, scale=1.3)
    assert crop.dtype == np.float32 and crop.shape == (4,)
    np.testing.assert_allclose(crop, [120 - 52, 90 - 52, 120 + 52, 90 + 52])


def test_square_crop_box_is_clipped_at_the_frame_borders():
    crop = square_crop_box(np.array([0, 10, 40, 50]), 100, 60, scale=2.0)  # square (-20, -10, 60, 70)
    np.testing.assert_allclose(crop, [0, 0, 60, 60])


@given(
    x0=st.floats(-100, 700),
    y0=st.floats(-100, 500),
    w=st.floats(1, 400),
    h=st.floats(1, 400),
    scale=st.floats(1.0, 3.0),
)
def test_square_crop_box_stays_in_the_frame_and_contains_the_face(x0, y0, w, h, scale):
    frame_w, frame_h = 640, 480
    box = np.array([x0, y0, x0 + w, y0 + h])
    crop = square_crop_box(box, frame_w, frame_h, scale).astype(np.float64)
    assert 0 <= crop[0] <= crop[2] <= frame_w and 0 <= crop[1] <= crop[3] <= frame_h
    face_in_frame = np.clip(box, 0, [frame_w, frame_h, frame_w, frame_h])
    tol = 1e-3
    assert crop[0] <= face_in_frame[0] + tol and crop[1] <= face_in_frame[1] + tol
    assert crop[2] >= face_in_frame[2] - tol and crop[3] >= face_in_frame[3] - tol
    side = scale * max(w, h)
    if crop[0] > 0 and crop[1] > 0 and crop[2] < frame_w and crop[3] < frame_h:  # nothing clipped
        np.testing.assert_allclose(crop[2:] - crop[:2], [side, side], rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose((crop[:2] + crop[2:]) / 2, [x0 + w / 2, y0 + h / 2], rtol=1e-5, atol=1e-3)


def test_crop_face_returns_the_resized_square_around_the_face():
    rgb = np.zeros((480, 640, 3), dtype=np.uint8)
    rgb[200:300, 300:400] = (255, 0, 0)  # a red 100x100 "face"
    crop = crop_face(rgb, np.array([300, 200, 400, 300], dtype=np.float32), scale=2.0, size=224)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    # The face fills the middle half of the crop, the margin around it is black.
    assert (crop[70:154, 70:154, 0] > 250).all()
    assert (crop[:50, :, 0] < 5).all() and (crop[-50:, :, 0] < 5).all()


def test_crop_face_of_a_non_square_box_at_the_border_keeps_the_face_inside():
    rgb = np.full((120, 200, 3), 7, dtype=np.uint8)
    crop = crop_face(rgb, np.array([180, 0, 200, 60], dtype=np.float32), size=64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert (crop == 7).all()


def test_crop_face_of_a_box_outside_the_frame_is_a_clear_error():
    rgb = np.zeros((100, 100, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="no area inside the 100x100 frame"):
        crop_face(rgb, np.array([150, 150, 170, 170], dtype=np.float32))


def test_normalise_box_divides_by_the_frame_size_and_clips():
    norm = normalise_box(np.array([320, 180, 1280, 800]), 1280, 720)
    assert norm.dtype == np.float32
    np.testing.assert_allclose(norm, [0.25, 0.25, 1.0, 1.0])

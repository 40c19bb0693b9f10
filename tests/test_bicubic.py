"""MATLAB-compatible bicubic against hand-computed and published MATLAB values.

References:
- Hand-computed Keys (a = -0.5) cases below, worked out in the comments.
- MATLAB outputs published in the GNU Octave image package's imresize.m test
  block (its MATLAB-compatible rewrite, 2022): the double result for a 1x2 RGB
  row resized to 3x3 ("values from MATLAB", 10.27777777777777 / 8 /
  5.72222222222222) and MATLAB's uint8 results for an 8x10 uint8 image at
  1.5, 0.5, 4/3 and 1/3, with and without antialiasing (Octave accepts +-1 there
  because "with integer Matlab rounds wrong"; rounding after each one-axis pass,
  as ``imresize_uint8`` does, reproduces them exactly).
"""
import numpy as np
import pytest
import torch
from PIL import Image

from harness.bicubic import (contributions, cubic, imresize, imresize_uint8, pil_bicubic_resize,
                             resize_matrix, to_uint8)

# Keys cubic at the offsets used below:
#   cubic(0.25) = 1.5/64 - 2.5/16 + 1              =  0.8671875
#   cubic(0.75) = 1.5*27/64 - 2.5*9/16 + 1         =  0.2265625
#   cubic(1.25) = -0.5*125/64 + 2.5*25/16 - 5 + 2  = -0.0703125
#   cubic(1.75) = -0.5*343/64 + 2.5*49/16 - 7 + 2  = -0.0234375


def test_keys_kernel_values():
    got = cubic(np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5, -0.75]))
    want = [1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0, 0.2265625]
    np.testing.assert_allclose(got, want, atol=1e-15)


def test_ramp_downscale_by_two_hand_computed():
    # x = [0, 1, 2, 3] -> 2 pixels, scale 1/2 with antialiasing: kernel
    # 0.5*cubic(0.5 d), width 8, 10 taps. Output 1 samples u = 1/0.5 + 0.5(1-2) = 1.5
    # (1-based); taps k = -3..6 at distances 4.5..-4.5, i.e. cubic at
    # 0, 1.75, 1.25, 0.75, 0.25, 0.25, 0.75, 1.25, 1.75, 0 (sum 2, so the
    # normalised weights are 0.5*cubic). Symmetric border (aux = 1 2 3 4 4 3 2 1):
    # k = -2, -1, 0 read pixels 3, 2, 1 and k = 5 reads pixel 4, so
    #   out1 = w1.75*x3 + w1.25*x2 + w0.75*x1 + w0.25*x1 + w0.25*x2 + w0.75*x3
    #          + w1.25*x4 + w1.75*x4
    #        = -0.01171875*2 - 0.03515625*1 + 0.43359375*1 + 0.11328125*2
    #          - 0.03515625*3 - 0.01171875*3 = 0.4609375
    # and by mirror symmetry out2 = 3 - out1 = 2.5390625.
    out = imresize(np.array([[0.0, 1.0, 2.0, 3.0]]), scale=(1, 0.5))
    np.testing.assert_allclose(out, [[0.4609375, 2.5390625]], atol=1e-12)
    # output_shape gives the same (scale 2/4 = 0.5)
    np.testing.assert_allclose(imresize(np.array([[0.0, 1, 2, 3]]), output_shape=(1, 2)), out, atol=1e-15)


def test_impulse_upscale_by_two_hand_computed_symmetric_border():
    # x = [0, 1, 0] -> 6 pixels at scale 2: u = i/2 + 0.25 = 0.75, 1.25, ..., 3.25.
    # Pixel 2 also appears, mirrored, at virtual positions -1 and 5 (aux = 1 2 3 3 2 1).
    # out1: u = 0.75 -> cubic(0.75 - 2) + cubic(0.75 + 1) = -0.0703125 - 0.0234375 = -0.09375
    #       (a clamped border would give only -0.0703125)
    # out2: cubic(-0.75) = 0.2265625;  out3: cubic(-0.25) = 0.8671875; symmetric after.
    out = imresize(np.array([[0.0, 1.0, 0.0]]), scale=(1, 2))
    want = [[-0.09375, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.09375]]
    np.testing.assert_allclose(out, want, atol=1e-12)


def test_matlab_double_reference_row_to_3x3():
    # MATLAB: imresize(cat(3,[10,6],[10,6],[10,6]), [3 3], "cubic") -> each plane
    # [1;1;1] * [10.27777777777777, 8, 5.72222222222222] (Octave image package tests).
    row = np.stack([np.array([[10.0, 6.0]])] * 3, axis=-1)           # (1, 2, 3) channels last
    out = imresize(row, output_shape=(3, 3))
    want = np.array([10.27777777777777, 8.0, 5.72222222222222])
    assert out.shape == (3, 3, 3)
    for c in range(3):
        np.testing.assert_allclose(out[:, :, c], np.tile(want, (3, 1)), atol=1e-12)
    col = np.stack([np.array([[10.0], [6.0]])] * 3, axis=-1)          # (2, 1, 3)
    np.testing.assert_allclose(imresize(col, output_shape=(3, 3))[:, 0, 0], want, atol=1e-12)


MATLAB_IN = np.array([
    [116, 227, 153, 69, 146, 194, 59, 130, 139, 106],
    [2, 47, 137, 249, 90, 75, 16, 24, 158, 44],
    [155, 68, 46, 84, 166, 156, 69, 204, 32, 152],
    [71, 221, 137, 230, 210, 153, 192, 115, 30, 118],
    [107, 143, 108, 52, 51, 73, 101, 21, 175, 90],
    [54, 158, 143, 77, 26, 168, 113, 229, 165, 225],
    [9, 47, 133, 135, 130, 207, 236, 43, 19, 73],
    [129, 60, 59, 243, 64, 181, 249, 56, 32, 86]], dtype=np.uint8)

MATLAB_UINT8 = {
    # (scale, antialiasing): MATLAB's uint8 output of imresize(uint8(in), scale, "bicubic", ...)
    (1.5, True): [
        [116, 187, 237, 171, 94, 61, 135, 191, 187, 75, 91, 142, 140, 124, 108],
        [43, 92, 143, 149, 164, 163, 119, 123, 118, 44, 38, 80, 151, 118, 62],
        [13, 21, 47, 107, 195, 228, 115, 81, 70, 24, 19, 56, 137, 105, 48],
        [146, 98, 49, 49, 71, 107, 148, 159, 132, 58, 124, 176, 61, 85, 146],
        [118, 139, 144, 92, 116, 168, 201, 188, 159, 140, 167, 158, 27, 69, 153],
        [61, 151, 218, 145, 174, 219, 201, 164, 146, 187, 148, 84, 48, 76, 115],
        [102, 132, 151, 119, 90, 72, 72, 72, 83, 114, 60, 31, 144, 130, 80],
        [81, 121, 154, 133, 87, 41, 19, 67, 116, 95, 108, 140, 183, 180, 163],
        [37, 95, 152, 150, 117, 73, 35, 108, 179, 130, 174, 214, 153, 176, 219],
        [3, 29, 73, 131, 136, 120, 116, 162, 214, 229, 147, 54, 35, 62, 96],
        [67, 54, 51, 83, 153, 187, 111, 141, 210, 255, 149, 22, 13, 42, 74],
        [142, 99, 53, 43, 164, 237, 77, 103, 197, 254, 159, 42, 31, 59, 91]],
    (0.5, False): [
        [92, 164, 123, 38, 118],
        [139, 116, 188, 167, 69],
        [121, 87, 67, 108, 180],
        [54, 153, 141, 149, 42]],
    (0.5, True): [
        [105, 140, 126, 81, 109],
        [110, 134, 153, 114, 93],
        [108, 108, 94, 127, 146],
        [67, 126, 162, 149, 62]],
    (4 / 3, True): [
        [116, 203, 221, 141, 62, 110, 180, 191, 70, 104, 143, 136, 111, 106],
        [26, 78, 126, 156, 200, 139, 103, 103, 33, 28, 92, 158, 67, 46],
        [51, 35, 51, 112, 195, 146, 101, 87, 29, 57, 100, 114, 81, 74],
        [159, 110, 63, 50, 82, 148, 179, 152, 83, 173, 147, 27, 143, 170],
        [70, 171, 189, 134, 217, 226, 193, 158, 186, 157, 83, 25, 114, 135],
        [91, 152, 162, 116, 118, 114, 102, 98, 138, 65, 60, 127, 92, 84],
        [90, 130, 144, 111, 52, 24, 50, 101, 94, 86, 129, 190, 146, 135],
        [41, 114, 157, 139, 89, 37, 82, 178, 125, 192, 203, 154, 213, 227],
        [4, 33, 89, 141, 127, 118, 151, 213, 232, 119, 35, 34, 81, 92],
        [88, 61, 54, 97, 203, 129, 115, 203, 255, 119, 18, 24, 70, 81],
        [147, 91, 43, 68, 247, 125, 80, 191, 255, 130, 33, 37, 83, 94]],
    (1 / 3, False): [
        [47, 90, 24, 44],
        [143, 51, 21, 90],
        [60, 64, 56, 86]],
    (1 / 3, True): [
        [115, 135, 97, 101],
        [113, 119, 124, 125],
        [81, 157, 118, 64]],
}


@pytest.mark.parametrize("scale,aa", list(MATLAB_UINT8))
def test_matlab_uint8_references_exact(scale, aa):
    want = np.array(MATLAB_UINT8[(scale, aa)], dtype=np.uint8)
    got = imresize_uint8(MATLAB_IN, scale=scale, antialiasing=aa)
    assert got.shape == want.shape          # ceil(8*4/3) x ceil(10*4/3) = 11 x 14, etc.
    np.testing.assert_array_equal(got, want)
    # the float path, rounded once at the end, is within 1 (MATLAB's own tolerance)
    once = to_uint8(imresize(MATLAB_IN.astype(np.float64), scale=scale, antialiasing=aa))
    assert np.abs(once.astype(int) - want.astype(int)).max() <= 1


def test_given_scale_is_used_for_sampling_not_size_ratio():
    # x4/3 on 8 rows gives 11 rows sampled at 4/3; forcing 11/8 gives other values.
    a = imresize(MATLAB_IN.astype(np.float64), scale=4 / 3)
    b = imresize(MATLAB_IN.astype(np.float64), output_shape=(11, 14))
    assert a.shape == b.shape == (11, 14)
    assert np.abs(a - b).max() > 1.0


def test_layouts_agree_and_constants_are_preserved():
    rng = np.random.default_rng(0)
    hwc = rng.random((13, 17, 3))
    out = imresize(hwc, scale=0.5)
    assert out.shape == (7, 9, 3)
    chw = torch.from_numpy(hwc.transpose(2, 0, 1).copy())
    out_t = imresize(chw, scale=0.5)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (3, 7, 9) and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy().transpose(1, 2, 0), out, atol=1e-12)
    batch = imresize(chw[None].float(), scale=0.5)
    assert batch.shape == (1, 3, 7, 9) and batch.dtype == torch.float32
    np.testing.assert_allclose(imresize(np.full((9, 11), 0.3), scale=1 / 3), 0.3, atol=1e-12)


def test_resize_matrix_rows_sum_to_one_and_match_contributions():
    mat = resize_matrix(10, 4, 0.4)
    np.testing.assert_allclose(mat.sum(axis=1), 1.0, atol=1e-12)
    w, idx = contributions(10, 4, 0.4)
    x = np.arange(10.0) ** 2
    np.testing.assert_allclose(mat @ x, (w * x[idx]).sum(axis=1), atol=1e-12)


def test_to_uint8_rounds_half_away_from_zero_and_clips():
    np.testing.assert_array_equal(to_uint8(np.array([0.5, 1.5, 2.4999, -3.0, 254.5, 300.0])),
                                  [1, 2, 2, 0, 255, 255])


def test_pil_bicubic_is_pil_and_differs_from_matlab():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    got = pil_bicubic_resize(img, (7, 9))
    want = np.asarray(Image.fromarray(img).resize((9, 7), Image.BICUBIC))
    np.testing.assert_array_equal(got, want)
    t = pil_bicubic_resize(torch.from_numpy(img).permute(2, 0, 1).float() / 255, (7, 9))
    assert t.shape == (3, 7, 9)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy() * 255, want, atol=1e-4)
    # different border handling: the two resamplers are not interchangeable
    matlab = imresize_uint8(img, output_shape=(7, 9))
    assert np.abs(matlab.astype(int) - got.astype(int)).max() > 0

"""PSNR on hand-computed images."""
import math

import pytest
import torch

from harness.metrics import average, psnr


def _img(h=40, w=40, value=0.5):
    return torch.full((3, h, w), value, dtype=torch.float64)


def test_constant_rgb_error_of_0_1_is_20_db():
    gt = _img()
    assert psnr(gt + 0.1, gt, scale=2, y_channel=False) == pytest.approx(20.0, abs=1e-6)


def test_y_weights_are_applied_to_the_difference():
    gt = _img()
    pred = gt.clone()
    pred[0] += 0.256                      # red only: Y diff = 0.256 * 65.738 / 256 = 0.065738
    assert psnr(pred, gt, 2, y_channel=True) == pytest.approx(-20 * math.log10(0.065738), abs=1e-6)
    assert psnr(pred, gt, 2, y_channel=True) == pytest.approx(23.643670258868408, abs=1e-6)
    # same error on all channels: Y diff = 0.1 * (65.738 + 129.057 + 25.064) / 256
    assert psnr(gt + 0.1, gt, 2, y_channel=True) == pytest.approx(21.321914340114525, abs=1e-6)
    # RGB of the red-only error: mse = 0.256^2 / 3
    assert psnr(pred, gt, 2, y_channel=False) == pytest.approx(-10 * math.log10(0.256 ** 2 / 3), abs=1e-5)


def test_errors_inside_the_shaved_border_are_excluded():
    gt = _img()
    pred = gt.clone()
    pred[:, :8, :] = 0.0                  # rows 0..7: inside the RGB shave of x2 (2 + 6)
    assert psnr(pred, gt, 2, y_channel=False) == math.inf
    # ... but the benchmark shave of x2 is 2 pixels, so rows 2..7 count there
    assert math.isfinite(psnr(pred, gt, 2, y_channel=True))
    pred = gt.clone()
    pred[:, :, :2] = 0.0                  # columns 0..1: inside both shaves
    assert psnr(pred, gt, 2, y_channel=True) == math.inf


def test_non_integer_scale_shaves_ceil():
    gt = _img()
    pred = gt.clone()
    pred[:, 2, :] = 0.0                   # row 2: kept with shave 2, removed with ceil(2.5) = 3
    assert math.isfinite(psnr(pred, gt, 2, y_channel=True))
    assert psnr(pred, gt, 2.5, y_channel=True) == math.inf
    pred = gt.clone()
    pred[:, 8, :] = 0.0                   # row 8: removed by RGB shave ceil(2.5) + 6 = 9
    assert psnr(pred, gt, 2.5, y_channel=False) == math.inf
    assert math.isfinite(psnr(pred, gt, 2, y_channel=False))


def test_prediction_is_clamped_not_rounded():
    gt = _img(value=1.0)
    assert psnr(gt + 0.2, gt, 2, y_channel=False) == math.inf      # clamped to 1
    gt = _img(value=0.5)
    # an error of 0.001 (a quarter of an 8-bit level) would vanish if rounded
    assert psnr(gt + 0.001, gt, 2, y_channel=False) == pytest.approx(60.0, abs=1e-3)


def test_batch_gives_one_value_per_image_and_average_is_plain_mean():
    gt = torch.stack([_img(), _img()])
    pred = gt.clone()
    pred[0] += 0.1
    pred[1] += 0.01
    out = psnr(pred, gt, 4, y_channel=False)
    assert out.shape == (2,)
    assert out[0].item() == pytest.approx(20.0, abs=1e-5) and out[1].item() == pytest.approx(40.0, abs=1e-4)
    assert average([20.0, 40.0]) == 30.0  # per-image mean; the pooled-MSE value would be 22.97
    with pytest.raises(ValueError):
        average([])


def test_shape_checks():
    with pytest.raises(ValueError):
        psnr(_img(40, 40), _img(40, 41), 2, y_channel=False)
    with pytest.raises(ValueError):
        psnr(_img(10, 10), _img(10, 10), 4, y_channel=False)   # shave 10 leaves nothing

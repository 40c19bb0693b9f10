"""Protocol rules pinned on hand-computed cases."""
import pytest
import torch

from harness.protocol import (DIV2K_EXTRA_SHAVE, Y_WEIGHTS, crop_to, denormalize, eval_cell,
                              matlab_scale, normalize, pad_symmetric_past_multiple, shave_for,
                              window_pad_amount)


def test_normalize_maps_0_half_1_to_minus1_0_1_and_round_trips():
    x = torch.tensor([0.0, 0.5, 1.0, 0.25])
    assert normalize(x).tolist() == [-1.0, 0.0, 1.0, -0.5]
    assert torch.equal(denormalize(normalize(x)), x)


@pytest.mark.parametrize("scale,factor", [(2, 1.0), (4, 1.0), (6, 1.5), (30, 7.5), (1.5, 1.0)])
def test_eval_cell_is_the_x4_cell_above_x4(scale, factor):
    h_lr = 10
    cell = torch.tensor([2 / (h_lr * scale), 2 / (h_lr * scale)])
    got = eval_cell(cell, scale)
    assert torch.allclose(got, cell * factor)
    if scale >= 4:   # exactly the cell of x4 relative to the LR grid
        assert torch.allclose(got, torch.full((2,), 2 / (h_lr * 4)))
    assert eval_cell(0.01, 30) == pytest.approx(0.075)


def test_window_pad_amount_is_one_to_w_never_zero():
    assert window_pad_amount(8, 8) == 8          # already a multiple: LTE still pads a full window
    assert window_pad_amount(10, 8) == 6
    assert window_pad_amount(1, 8) == 7
    assert window_pad_amount(10, 48) == 38
    assert window_pad_amount(47, 48) == 1


def test_pad_is_lte_symmetric_mirror_and_crop_round_trips():
    x = torch.tensor([[1.0, 2.0, 3.0]])          # (H=1, W=3)
    padded, shape = pad_symmetric_past_multiple(x, 4)
    # W: 3 -> 4 (pad 1): [1, 2, 3 | 3]; H: 1 -> 4 (pad 3): the row repeated.
    assert padded.tolist() == [[1, 2, 3, 3]] * 4 and shape == (1, 3)
    wide, _ = pad_symmetric_past_multiple(x, 8)               # pad 5 > W: mirror continues periodically
    assert wide[0].tolist() == [1, 2, 3, 3, 2, 1, 1, 2]
    assert torch.equal(crop_to(wide, shape), x)


def test_pad_equals_lte_cat_flip_when_pad_fits():
    x = torch.arange(2 * 3 * 11 * 13, dtype=torch.float32).view(2, 3, 11, 13)
    w = 8
    ph, pw = window_pad_amount(11, w), window_pad_amount(13, w)
    lte = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :11 + ph, :]
    lte = torch.cat([lte, torch.flip(lte, [3])], 3)[:, :, :, :13 + pw]
    ours, shape = pad_symmetric_past_multiple(x, w)
    assert ours.shape == (2, 3, 16, 16) and torch.equal(ours, lte)
    assert torch.equal(crop_to(ours, shape), x)
    # not torch's 'reflect' (which skips the edge pixel)
    reflect = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
    assert not torch.equal(ours, reflect)


def test_shave_rules():
    assert shave_for(2, y_channel=True) == 2
    assert shave_for(2, y_channel=False) == 2 + DIV2K_EXTRA_SHAVE == 8
    assert shave_for(30, y_channel=False) == 36
    assert shave_for(2.5, y_channel=True) == 3
    assert shave_for(1.5, y_channel=False) == 8
    assert shave_for(4.000000000001, y_channel=True) == 4
    assert Y_WEIGHTS == pytest.approx((65.738 / 256, 129.057 / 256, 25.064 / 256))


def test_matlab_scale():
    assert matlab_scale(2) == 2 and matlab_scale(3.0) == 3 and matlab_scale(4) == 4
    assert matlab_scale(2.5) is None and matlab_scale(6) is None and matlab_scale(1) is None


def test_evaluation_padding_is_not_the_extractors_internal_padding():
    # The protocol mirrors past the next multiple (1..w pixels, edge repeated);
    # the window extractors reflect to the next multiple (0..w-1, edge not repeated).
    from extractors.layers import pad_reflect_to_multiple

    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])        # (1, 1, H=1, W=3)
    sym, _ = pad_symmetric_past_multiple(x, 4)
    assert sym[0, 0, 0].tolist() == [1, 2, 3, 3] and sym.shape[-2] == 4
    assert pad_reflect_to_multiple(x, 4)[0, 0].tolist() == [[1, 2, 3, 2]] * 4   # H=1: replicated
    sym, _ = pad_symmetric_past_multiple(x, 3)     # already a multiple: a whole window more
    assert sym[0, 0, 0].tolist() == [1, 2, 3, 3, 2, 1]
    assert pad_reflect_to_multiple(x, 3)[0, 0].tolist() == [[1, 2, 3]] * 3
    # pad 5 > W - 1: reflected repeatedly
    assert pad_reflect_to_multiple(x, 8)[0, 0, 0].tolist() == [1, 2, 3, 2, 1, 2, 3, 2]

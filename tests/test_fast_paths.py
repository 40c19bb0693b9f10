"""The inference fast paths of LIIF, LTE and MetaSR against the per-query forms they replace.

Without autograd the decoders read banded per-pixel maps (``upsamplers.bands``),
send the four corners of a block of queries through the MLP at once, and MetaSR
folds its last layer into the map or, with few distinct offsets, turns the
weight predictor into a per-pair convolution. With autograd (training) the
per-query form runs. Each fast path must give the per-query form's output
within 1e-5 of the output's magnitude, on HR grids at integer and non-integer
scales, with the evaluation's enlarged cell above x4, and on random queries
(some outside the image), for a batch of two different images.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import upsamplers.bands as bands
from harness.protocol import eval_cell
from upsamplers import UPSAMPLERS, upsampler_names
from upsamplers.bands import BandedMap, band_rows, conv_band, ensemble_corners, nearest_index
from upsamplers.base import corner_queries, feature_grid, sample_nearest
from upsamplers.coords import make_coord
from upsamplers.metasr import OFFSET_TOL, MetaSR, meta_pixels, meta_positions, offset_groups

LR = (13, 17)
SCALES = [2.0, 3.0, 4.0, 12.0, 2.5, 3.3]  # 2.5: five offsets per axis; 3.3: many


class ConvEncoder(nn.Module):
    """One 3x3 convolution: a different feature map for every input image."""

    scale_aware = False
    window_size = None

    def __init__(self, out_dim: int):
        super().__init__()
        self.out_dim = out_dim
        self.conv = nn.Conv2d(3, out_dim, 3, padding=1)

    def forward(self, x, scale=None):
        return self.conv(x)


def model_of(name: str, **kwargs):
    upsampler_names()  # fill the registry
    torch.manual_seed(21)
    width = {"liif": dict(hidden_list=[32, 32]), "lte": dict(hidden_dim=16, hidden_list=[32, 32]),
             "metasr": dict(hidden_list=[24])}[name]
    model = UPSAMPLERS.build(name, encoder=ConvEncoder(8), **{**width, **kwargs}).eval()
    with torch.no_grad():  # outputs of order 1..10, so that the tolerance means something
        for p in model.parameters():
            p.mul_(2.0)
    return model


def grid_of(scale: float, b: int = 2):
    """The evaluation's query grid and cell for an LR image of ``LR`` pixels at ``scale``."""
    H, W = round(LR[0] * scale), round(LR[1] * scale)
    coord = make_coord((H, W)).unsqueeze(0).expand(b, -1, -1).contiguous()
    cell = eval_cell(torch.tensor([2.0 / H, 2.0 / W]), scale).expand(b, H * W, 2).contiguous()
    return coord, cell


def random_queries(n: int = 400, b: int = 2):
    g = torch.Generator().manual_seed(5)
    coord = torch.rand(b, n, 2, generator=g) * 2.2 - 1.1  # some outside [-1, 1]
    cell = torch.rand(b, n, 2, generator=g) * 0.2 + 0.01
    return coord, cell


def assert_equivalent(fast: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5):
    assert fast.shape == ref.shape and not fast.requires_grad
    ref = ref.detach()
    err, scale = float((fast - ref).abs().max()), float(ref.abs().max())
    assert scale > 1.0, "outputs too small for the tolerance to mean anything"
    assert err <= rel * scale, f"max |fast - per-query| = {err:.3g} > {rel:g} * {scale:.3g}"


def per_query_and_fast(model, coord, cell, chunk=100):
    inp = torch.randn(coord.shape[0], 3, *LR, generator=torch.Generator().manual_seed(3))
    ref = model(inp, coord, cell)  # autograd on: the per-query form
    assert ref.requires_grad
    fast = model.predict(inp, coord, cell, chunk=chunk)  # no autograd: the fast path
    return fast, ref


# -- each decoder's fast path equals its per-query form ---------------------------------
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", ["liif", "lte", "metasr"])
def test_fast_path_equals_per_query_form_on_grids(name, scale):
    fast, ref = per_query_and_fast(model_of(name), *grid_of(scale))
    assert_equivalent(fast, ref)


@pytest.mark.parametrize("name", ["liif", "lte", "metasr"])
def test_fast_path_equals_per_query_form_on_random_queries(name):
    fast, ref = per_query_and_fast(model_of(name), *random_queries(), chunk=150)
    assert_equivalent(fast, ref)


@pytest.mark.parametrize("feat_unfold,cell_decode,local_ensemble", [
    (False, True, True), (True, False, True), (True, True, False), (False, False, False)])
def test_liif_fast_path_with_every_option(feat_unfold, cell_decode, local_ensemble):
    model = model_of("liif", feat_unfold=feat_unfold, cell_decode=cell_decode,
                     local_ensemble=local_ensemble)
    for coord, cell in (grid_of(3.0), random_queries()):
        assert_equivalent(*per_query_and_fast(model, coord, cell))


@pytest.mark.parametrize("hidden", [[24], [8, 8], []])
def test_metasr_both_inference_paths_equal_the_per_query_form(hidden, monkeypatch):
    model = model_of("metasr", hidden_list=hidden)
    calls = []
    real = MetaSR._pair_weights

    def spy(self, *args):
        out = real(self, *args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(MetaSR, "_pair_weights", spy)
    for scale in (2.0, 3.3):
        calls.clear()
        assert_equivalent(*per_query_and_fast(model, *grid_of(scale)))
        if scale == 2.0:  # two offsets per axis: every chunk takes the pair path
            assert calls and all(calls)
        else:  # a chunk with more offset pairs than hidden + 1 takes the folded map
            assert calls and not all(calls)


def test_metasr_pair_path_is_as_accurate_as_the_per_query_form():
    # Both approximate the float64 result; the pair path's grouping of offsets
    # costs no more than float32 rounding already does.
    model = model_of("metasr")
    inp = torch.randn(1, 3, *LR, generator=torch.Generator().manual_seed(3))
    coord, cell = grid_of(2.0, b=1)
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(inp.double(), coord.double(), cell.double())
        per_query_err = (model.query_rgb(inp, model.encode(inp), coord, cell) - exact).abs().max()
        fast_err = (model.predict(inp, coord, cell) - exact).abs().max()
    assert fast_err <= 2 * per_query_err + 1e-6


def test_metasr_offsets_group_only_within_the_tolerance():
    v = torch.tensor([0.5, 0.0, 0.25 + 1e-7, 0.25, 0.5 - 2e-7, 0.0])
    values, group = offset_groups(v, 1e-6, most=10)
    torch.testing.assert_close(values, torch.tensor([0.0, 0.25 + 5e-8, 0.5 - 1e-7]))
    assert group.tolist() == [2, 0, 1, 1, 2, 0]
    assert offset_groups(v, 1e-6, most=2) is None  # too many groups
    chain = torch.arange(10) * 0.8e-6  # gaps within the tolerance, span beyond it
    assert offset_groups(chain, 1e-6, most=10) is None
    # the evaluation grids: s offsets per axis at integer scales
    for scale in (2.0, 3.0, 4.0):
        coord, cell = grid_of(scale, b=1)
        _, _, meta_in = meta_pixels(coord, cell, *LR)
        tol = OFFSET_TOL * max(LR)
        assert len(offset_groups(meta_in[0, :, 0], tol, 100)[0]) == scale
        assert len(offset_groups(meta_in[0, :, 1], tol, 100)[0]) == scale


# -- the pieces ------------------------------------------------------------------------
def test_nearest_index_is_the_pixel_grid_sample_reads():
    h, w = 7, 11
    g = torch.Generator().manual_seed(0)
    coord = torch.cat([torch.rand(1, 3000, 2, generator=g) * 2 - 1,
                       make_coord((4 * h, 4 * w)).unsqueeze(0),          # grids, as evaluated
                       (make_coord((2 * h, 2 * w)) + 1e-6).unsqueeze(0)], dim=1)
    grid = feature_grid(1, h, w, coord)  # each pixel's own centre: which pixel was read
    read = sample_nearest(grid, coord)[0]
    idx = nearest_index(coord[0], (h, w))
    torch.testing.assert_close(read, make_coord((h, w)).view(h, w, 2)[idx[:, 0], idx[:, 1]], atol=0, rtol=0)


def test_ensemble_corners_equal_the_per_query_corners():
    h, w = 6, 9
    coord = torch.rand(2, 500, 2, generator=torch.Generator().manual_seed(1)) * 2.2 - 1.1
    corners = ensemble_corners(coord, h, w)
    grid = feature_grid(2, h, w, coord)
    centres = make_coord((h, w)).view(h, w, 2)
    for k, shifted in enumerate(corner_queries(coord, h, w)):
        centre = sample_nearest(grid, shifted)
        assert torch.equal(centres[corners.row[k], corners.col[k]], centre)
        assert torch.equal(corners.rel[k], (coord - centre) * torch.tensor([h, w]))
    torch.testing.assert_close(corners.weight.sum(0), torch.ones(2, 500))


def test_metasr_pixels_equal_the_sampled_positions():
    coord, cell = random_queries()
    read_at, meta_in = meta_positions(coord, cell, *LR)
    row, col, meta_in_2 = meta_pixels(coord, cell, *LR)
    assert torch.equal(meta_in, meta_in_2)
    assert torch.equal(torch.stack([row, col], -1), nearest_index(read_at, LR))


@pytest.mark.parametrize("k", [1, 3])
def test_bands_equal_the_whole_map_convolution(k, monkeypatch):
    feat = torch.randn(2, 5, 37, 6)
    weight, bias = torch.randn(7, 5, k, k), torch.randn(7)
    whole = F.conv2d(feat, weight, bias, padding=k // 2).permute(0, 2, 3, 1)
    banded = BandedMap(feat, conv_band(weight, bias), k // 2)
    assert banded.tile_rows() == bands.TILE_PIXELS // 6  # tiles of whole rows, ~TILE_PIXELS pixels
    monkeypatch.setattr(bands, "TILE_PIXELS", 6 * 8 + 5)  # 8 rows of 6 pixels
    assert banded.tile_rows() == 8
    for r0, r1 in ((0, 5), (3, 20), (15, 37), (36, 37), (0, 37), (2, 3)):
        torch.testing.assert_close(banded.rows(r0, r1), whole[:, r0:r1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(band_rows(feat, r0, r1, conv_band(weight, bias), k // 2),
                                   whole[:, r0:r1], atol=1e-5, rtol=1e-5)
    # a band keeps only the tiles it spans, whichever order rows are asked for
    banded.rows(7, 10)
    assert sorted(banded._tiles) == [0, 1]
    banded.rows(10, 12)
    assert sorted(banded._tiles) == [1]
    banded.rows(0, 2)
    assert sorted(banded._tiles) == [0]


@pytest.mark.parametrize("name", ["liif", "lte", "metasr"])
def test_fast_paths_are_off_under_autograd(name, monkeypatch):
    # A training step never reaches the banded maps: its numerics are the per-query form's.
    model = model_of(name).train()

    def refuse(*args, **kwargs):
        raise AssertionError("a fast path ran under autograd")

    monkeypatch.setattr(bands, "band_rows", refuse)
    monkeypatch.setattr(BandedMap, "rows", refuse)
    coord, cell = random_queries(64)
    model(torch.randn(2, 3, *LR), coord, cell).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad(), pytest.raises(AssertionError, match="fast path"):
        model(torch.randn(2, 3, *LR), coord, cell)


@pytest.mark.parametrize("fused", [True, False])
def test_run_mlp_equals_the_modules(fused, monkeypatch):
    if fused and bands._FUSED_LINEAR is None:
        pytest.skip("this torch has no fused oneDNN linear")
    if not fused:
        monkeypatch.setattr(bands, "_FUSED_LINEAR", None)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(50, 7)
    with torch.no_grad():
        torch.testing.assert_close(bands.run_mlp(mlp, x.clone()), mlp(x), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(bands.run_mlp(mlp, x.clone(), rows=7), mlp(x), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(bands.run_mlp(mlp[1:], x[:, :1].expand(50, 16).clone()),
                                   mlp[1:](x[:, :1].expand(50, 16)), atol=1e-6, rtol=1e-6)


def test_blocks_split_on_the_cpu_only(monkeypatch):
    monkeypatch.setattr(bands, "QUERY_BLOCK", 4)
    assert list(bands.blocks(10, torch.zeros(1))) == [(0, 4), (4, 8), (8, 10)]
    assert list(bands.blocks(10, torch.zeros(1, device="meta"))) == [(0, 10)]
    assert list(bands.blocks(0, torch.zeros(1))) == []

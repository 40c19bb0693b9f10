"""FLOPs counting (the harness.flops package): operator decisions and the fast, exact count.

- every operator of every registered extractor and upsampler model has a
  decision (fvcore's unsupported list is empty), and an op without one is
  reported;
- the SDPA handle counts what fvcore counts for the written-out attention;
- the fast count equals fvcore's direct count, for every extractor (small
  widths) on sizes it was not fitted on, along forced and TARC-chosen routings;
- SwinIR on one 768x1020 image is the paper's Figure 2 figure, 9733.65 G.
"""
from __future__ import annotations

import random
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from extractors import create_extractor, extractor_names
from harness import flops as FL
from harness.flops.routed import RoutingCall, fits_of
from upsamplers import create_model, upsampler_names
from upsamplers.coords import make_coord

# Small widths for direct counts; a name missing here is built at its default.
SMALL = {
    "edsr-baseline": dict(n_resblocks=2, n_feats=16),
    "rdn": dict(G0=16, D=2, C=2, G=8),
    "rcan": dict(n_resgroups=2, n_resblocks=2, n_feats=16),
    "swinir": dict(embed_dim=24, depths=(2, 2), num_heads=(2, 2)),
    "baseline": dict(embed_dim=32, num_groups=2),
    "tadt": dict(embed_dim=32, num_groups=2),
    "nlsa": dict(n_resblocks=2, n_feats=16, attention_every=1, chunk_size=16),
    "cat-r-2": dict(img_size=16, embed_dim=64, depth=(2,), num_heads=(2,), split_size_0=(2,), split_size_1=(8,)),
}
SIZES = [(40, 56), (37, 53), (64, 100)]
PAPER_SWINIR_GFLOPS = 9733.65  # Figure 2: SwinIR on one 768x1020 DIV2K LR image


def small(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_extractor(name, **SMALL.get(name, {})).eval()


def _image(h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --------------------------------------------------------------------------- operator decisions


def _routing_calls(ext: nn.Module) -> list[dict]:
    if not FL.is_routed(ext):
        return [{"scale": 2.0}]
    calls = [{"scale": 2.0, "routing": "all"}, {"scale": 2.0, "routing": "none"}, {"scale": 2.0}]
    return calls


@pytest.mark.parametrize("name", extractor_names())
def test_no_unsupported_ops_in_extractors(name):
    ext = small(name)
    for kwargs in _routing_calls(ext):
        _, by_op, unsupported = FL.count_flops(ext, _image(21, 27), kwargs)
        assert unsupported == {}, f"{name} {kwargs}: ops without a FLOPs decision: {unsupported}"
        assert by_op.get("conv", 0) > 0
    if FL.is_routed(ext):  # the routing decision alone (TADT's TARC), as counted apart
        _, _, unsupported = FL.count_flops(RoutingCall(ext, 2.0), (_image(21, 27),))
        assert unsupported == {}, f"{name} routing: ops without a FLOPs decision: {unsupported}"


@pytest.mark.parametrize("up", upsampler_names())
def test_no_unsupported_ops_in_upsampler_models(up):
    torch.manual_seed(0)
    model = create_model(up, "edsr-baseline", extractor_args=SMALL["edsr-baseline"]).eval()
    h, w, H, W = 8, 10, 19, 23
    coord = make_coord((H, W)).unsqueeze(0)
    cell = torch.empty_like(coord)
    cell[..., 0], cell[..., 1] = 2 / H, 2 / W
    total, by_op, unsupported = FL.count_flops(model, (_image(h, w), coord, cell))
    assert unsupported == {}, f"{up}: ops without a FLOPs decision: {unsupported}"
    assert by_op.get("linear", 0) > 0 and total > 0


def test_an_op_without_a_decision_is_reported():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.erfinv(x.clamp(-0.5, 0.5))

    _, _, unsupported = FL.count_flops(Odd(), torch.rand(1, 3, 4, 4))
    assert "aten::erfinv" in unsupported


def test_zero_decisions_do_not_hide_compute_ops():
    compute = {"aten::_convolution", "aten::linear", "aten::matmul", "aten::bmm", "aten::addmm",
               "aten::einsum", "aten::layer_norm", "aten::scaled_dot_product_attention", "aten::baddbmm",
               "aten::upsample_bicubic2d", "aten::upsample_bilinear2d", "aten::grid_sampler"}
    assert not compute & set(FL.ZERO_OPS)


# --------------------------------------------------------------------------- handles


class _Attention(nn.Module):
    def __init__(self, fused: bool):
        super().__init__()
        self.fused = fused

    def forward(self, q, k, v, bias):
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias
        return attn.softmax(-1) @ v


@pytest.mark.parametrize("b,heads,lq,lk,d,dv", [(3, 2, 16, 16, 8, 8), (2, 4, 36, 9, 6, 10), (1, 1, 5, 7, 3, 2)])
def test_sdpa_handle_equals_explicit_matmuls(b, heads, lq, lk, d, dv):
    q, k, v = torch.randn(b, heads, lq, d), torch.randn(b, heads, lk, d), torch.randn(b, heads, lk, dv)
    bias = torch.randn(heads, lq, lk)
    fused, by_fused, _ = FL.count_flops(_Attention(True), (q, k, v, bias))
    explicit, by_explicit, _ = FL.count_flops(_Attention(False), (q, k, v, bias))
    assert fused == explicit == b * heads * lq * lk * (d + dv)
    assert set(by_fused) == {"scaled_dot_product_attention"} and set(by_explicit) == {"matmul"}


def test_sdpa_handle_broadcasts_batch_dims():
    q = torch.randn(4, 2, 16, 8)
    k = torch.randn(1, 2, 4, 8)  # keys shared by every batch item
    total, _, _ = FL.count_flops(_Attention(True), (q, k, k, torch.zeros(16, 4)))
    assert total == 4 * 2 * 16 * 4 * (8 + 8)


def test_interpolation_handles():
    class Interp(nn.Module):
        def __init__(self, mode):
            super().__init__()
            self.mode = mode

        def forward(self, x, grid):
            return F.grid_sample(x, grid, mode=self.mode, align_corners=False)

    x, grid = torch.rand(1, 3, 5, 6), torch.rand(1, 7, 9, 2) * 2 - 1
    counts = {m: FL.count_flops(Interp(m), (x, grid))[0] for m in ("nearest", "bilinear", "bicubic")}
    assert counts == {"nearest": 3 * 63, "bilinear": 4 * 3 * 63, "bicubic": 16 * 3 * 63}

    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, size=(10, 11), mode="bicubic", align_corners=False)

    assert FL.count_flops(Up(), torch.rand(2, 3, 5, 6))[0] == 16 * 2 * 3 * 10 * 11


def test_count_flops_restores_training_mode():
    ext = small("swinir").train()
    FL.count_flops(ext, _image(8, 8))
    assert ext.training and all(m.training for m in ext.modules())


# --------------------------------------------------------------------------- fast == direct


def test_padding_rule():
    assert FL.padded(768, 8) == 768 and FL.padded(1020, 8) == 1024 and FL.padded(1020, None) == 1020
    assert FL.padded(48, 48) == 48 and FL.padded(49, 48) == 96


@pytest.mark.parametrize("name", extractor_names())
def test_fast_count_equals_fvcore_direct(name):
    ext = small(name)
    rng = random.Random(0)
    for h, w in SIZES:
        if FL.is_routed(ext):
            n = FL.routing_bits(ext)
            for routing in ("all", "none", "".join(rng.choice("01") for _ in range(n))):
                fast = FL.extractor_flops(ext, h, w, scale=2.0, routing=routing)
                assert fast == FL.direct_extractor_flops(ext, h, w, scale=2.0, routing=routing), (name, h, w, routing)
        else:
            assert FL.extractor_flops(ext, h, w) == FL.direct_extractor_flops(ext, h, w), (name, h, w)


def test_tadt_count_follows_the_tarc_on_the_real_image():
    ext = small("tadt")
    for (h, w), scale in zip(SIZES, (2.0, 3.0, 4.0)):
        img = _image(h, w, seed=h)
        res = FL.count_extractor(ext, h, w, scale=scale, image=img)
        assert res.routing == FL.canonical_routing(ext, ext.routing_for(img, scale).r)
        assert res.routing_source == "tarc"
        # fvcore's count of the forward pass that lets the TARC decide
        assert res.flops == FL.direct_extractor_flops(ext, scale=scale, image=img)
        # the TARC itself, counted alone (fvcore's trace of the forward drops it)
        tarc, _, unsupported = FL.count_flops(RoutingCall(ext, scale), (img,))
        assert res.routing_flops == tarc > 0 and unsupported == {}


def test_forced_routing_count_does_not_depend_on_scale():
    ext = small("tadt")
    bits = "1010" + "0111"
    counts = {FL.direct_extractor_flops(ext, 40, 56, scale=s, routing=bits) for s in (1.5, 4.0)}
    assert counts == {FL.extractor_flops(ext, 40, 56, scale=2.0, routing=bits)}


def test_baseline_default_path_is_all_branches():
    ext = small("baseline")
    assert FL.count_extractor(ext, 40, 56).routing == "1" * FL.routing_bits(ext)
    assert FL.extractor_flops(ext, 40, 56) == FL.extractor_flops(ext, 40, 56, routing="all")
    with pytest.raises(ValueError, match="depends on the image"):
        FL.count_extractor(small("tadt"), 40, 56, scale=2.0)


class _Interacting(nn.Module):
    """A routed stand-in whose cost is NOT per-group affine: an extra conv runs
    only when bit 0 and bit 5 are both on (groups interact)."""

    window_size = None
    n_branches = 8

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1) for _ in range(9)])
        self.head = nn.Conv2d(3, 4, 3, padding=1)
        self.last_routing = None

    def forward(self, x, scale=None, routing=None):
        bits = FL.canonical_routing(self, routing if routing is not None else "all")
        y = self.head(x)
        for i, b in enumerate(bits):
            if b == "1":
                y = y + self.convs[i](y)
        if bits[0] == "1" and bits[5] == "1":
            y = self.convs[8](y)
        return y


def test_routed_fit_falls_back_when_groups_interact():
    ext = _Interacting().eval()
    for bits in ("10000100", "10000000", "11111111", "01100101"):
        assert FL.extractor_flops(ext, 20, 30, routing=bits) == FL.direct_extractor_flops(ext, 20, 30, routing=bits)
    assert fits_of(ext).routed is None and fits_of(ext).per_routing


def test_size_fit_widens_its_basis_when_needed():
    class RowCost(nn.Module):
        """FLOPs with an H*W, an H and a constant term (a per-row linear)."""

        window_size = None

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            self.row = nn.Linear(3, 5)
            self.const = nn.Linear(7, 11)

        def forward(self, x, scale=None):
            rows = self.row(x.mean(-1).transpose(1, 2))  # (B, H, 5)
            return self.conv(x).sum() + rows.sum() + self.const(torch.ones(1, 7)).sum()

    m = RowCost().eval()
    for h, w in SIZES:
        assert FL.extractor_flops(m, h, w) == FL.count_flops(m, _image(h, w))[0] == 6 * h * w + 15 * h + 77
    assert fits_of(m).plain.names == ("HW", "H", "W", "1")


def test_bad_routing_strings():
    ext = small("tadt")
    with pytest.raises(ValueError, match="8 bits"):
        FL.canonical_routing(ext, "1010")
    with pytest.raises(ValueError, match="8 bits"):
        FL.canonical_routing(ext, "10102111")
    assert FL.canonical_routing(ext, "1010_0111") == "10100111"
    assert FL.canonical_routing(ext, torch.tensor([1, 0, 1, 0, 0, 1, 1, 1])) == "10100111"


# --------------------------------------------------------------------------- the paper's figure


def test_swinir_figure2_count_is_fast_and_matches_the_paper():
    torch.manual_seed(0)
    ext = create_extractor("swinir").eval()  # the paper's configuration
    t0 = time.perf_counter()
    gflops = FL.extractor_gflops(ext, 768, 1020)
    elapsed = time.perf_counter() - t0
    assert abs(gflops - PAPER_SWINIR_GFLOPS) / PAPER_SWINIR_GFLOPS < 1e-3
    assert round(gflops, 2) == PAPER_SWINIR_GFLOPS  # exact to the paper's two decimals
    assert elapsed < 120, f"fast count took {elapsed:.0f} s"
    # the same fit, checked against fvcore run directly on a size it was not fitted on
    assert FL.extractor_flops(ext, 45, 61) == FL.direct_extractor_flops(ext, 45, 61)

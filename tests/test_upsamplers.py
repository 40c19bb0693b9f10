"""MetaSR, LIIF and LTE: reference sizes, the shared API, and hand-checked behaviour."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from upsamplers import DEFAULT_CHUNK, UPSAMPLERS, create_model, upsampler_names
from upsamplers.bands import BandedMap
from upsamplers.base import area_weights, ensemble_query, scale_from_cell
from upsamplers.coords import make_coord, make_cell
from upsamplers.lte import LTEFeatures
from upsamplers.metasr import meta_positions

NAMES = ["metasr", "liif", "lte"]
# "Own layers" of each upsampler on a 64-channel extractor (reference configurations).
REFERENCE_DECODER_PARAMS = {"liif": 346_883, "lte": 493_827, "metasr": 445_120}
REFERENCE_DECODER_KEYS = {
    "liif": [f"imnet.layers.{i}.{p}" for i in (0, 2, 4, 6, 8) for p in ("weight", "bias")],
    "lte": ["coef.weight", "coef.bias", "freq.weight", "freq.bias", "phase.weight"]
    + [f"imnet.layers.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")],
    "metasr": [f"imnet.layers.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")],
}


class StubEncoder(nn.Module):
    """A one-conv extractor that records the scale it was given."""

    scale_aware = False
    window_size = None

    def __init__(self, out_dim: int = 64):
        super().__init__()
        self.out_dim = out_dim
        self.conv = nn.Conv2d(3, out_dim, 3, padding=1)
        self.seen_scales: list = []

    def forward(self, x, scale=None):
        self.seen_scales.append(scale)
        return self.conv(x)


class FixedEncoder(nn.Module):
    """Returns a given feature map ``(C, h, w)`` whatever the input."""

    scale_aware = False
    window_size = None

    def __init__(self, feat: torch.Tensor):
        super().__init__()
        self.out_dim = feat.shape[0]
        self.register_buffer("feat", feat, persistent=False)

    def forward(self, x, scale=None):
        return self.feat.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


def build(name, encoder=None, **kwargs):
    upsampler_names()  # fill the registry
    return UPSAMPLERS.build(name, encoder=encoder or StubEncoder(), **kwargs)


def grid_queries(b, hr_h, hr_w):
    coord = make_coord((hr_h, hr_w)).unsqueeze(0).expand(b, -1, -1).contiguous()
    cell = make_cell((hr_h, hr_w), coord.shape[1]).unsqueeze(0).expand(b, -1, -1).contiguous()
    return coord, cell


def ramp(h, w):
    """Feature value 10 * row + column."""
    return (10 * torch.arange(h, dtype=torch.float32)[:, None] + torch.arange(w)).view(1, h, w)


def zero_(module):
    for p in module.parameters():
        nn.init.zeros_(p)


# -- sizes, names, keys ---------------------------------------------------------
def test_registered_names():
    assert upsampler_names() == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_reference_decoder_parameters(name):
    model = build(name)
    own = sum(p.numel() for k, p in model.named_parameters() if not k.startswith("encoder."))
    assert own == REFERENCE_DECODER_PARAMS[name]
    assert model.decoder_parameters() == REFERENCE_DECODER_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
def test_reference_state_dict_keys(name):
    keys = [k for k in build(name).state_dict() if not k.startswith("encoder.")]
    assert keys == REFERENCE_DECODER_KEYS[name]


def test_widths_are_configurable():
    # LIIF 580 -> 16 -> 16 -> 3; LTE coef/freq 64 -> 8, phase 2 -> 4, MLP 8 -> 16 -> 3; MetaSR 3 -> 16 -> 1728
    liif = build("liif", hidden_list=[16, 16])
    assert liif.decoder_parameters() == (580 * 16 + 16) + (16 * 16 + 16) + (16 * 3 + 3)
    lte = build("lte", hidden_dim=8, hidden_list=[16])
    assert lte.decoder_parameters() == 2 * (64 * 8 * 9 + 8) + 2 * 4 + (8 * 16 + 16) + (16 * 3 + 3)
    meta = build("metasr", hidden_list=[16])
    assert meta.decoder_parameters() == (3 * 16 + 16) + (16 * 1728 + 1728)
    with pytest.raises(ValueError, match="even"):
        build("lte", hidden_dim=7)


# -- the common API -------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_finite(name):
    torch.manual_seed(0)
    model = build(name)
    inp = torch.randn(2, 3, 5, 7)
    coord, cell = grid_queries(2, 11, 16)
    out = model(inp, coord, cell)
    assert out.shape == (2, 11 * 16, 3)
    assert torch.isfinite(out).all()
    # arbitrary (non-grid) queries, batch of one
    q = torch.rand(1, 37, 2) * 2 - 1
    assert model(inp[:1], q, cell[:1, :37]).shape == (1, 37, 3)


@pytest.mark.parametrize("name", NAMES)
def test_predict_chunked_equals_unchunked(name):
    torch.manual_seed(1)
    model = build(name).eval()
    inp = torch.randn(2, 3, 6, 5)
    coord, cell = grid_queries(2, 11, 9)
    with torch.no_grad():
        whole = model(inp, coord, cell)
    for chunk in (1000, 40, 9):
        part = model.predict(inp, coord, cell, chunk=chunk)
        assert part.shape == whole.shape
        assert not part.requires_grad
        if name == "metasr":  # offsets are grouped per chunk: equal to float rounding
            torch.testing.assert_close(part, whole, atol=1e-6 * whole.abs().max(), rtol=0)
        else:  # banded maps are computed in tiles aligned on the image: bit for bit
            assert torch.equal(part, whole)
    with pytest.raises(ValueError):
        model.predict(inp, coord, cell, chunk=0)


def test_decode_in_chunks_makes_queries_on_demand_and_covers_every_query():
    from upsamplers.base import decode_in_chunks

    class Echo:  # query_rgb returns each query's coordinates and cell: its place in the output
        def query_rgb(self, inp, feat, coord, cell):
            return torch.cat([coord, cell[..., :1]], dim=-1)

    coord = torch.arange(2 * 23 * 2, dtype=torch.float32).view(2, 23, 2)
    cell = -coord
    events = []

    def queries(i, j):
        events.append(("make", i, j))
        return coord[:, i:j], cell[:, i:j]

    pieces = []
    for i, j, rgb in decode_in_chunks(Echo(), None, None, 23, queries, chunk=10):
        events.append(("got", i, j))
        pieces.append(rgb)
    assert events == [("make", 0, 10), ("got", 0, 10), ("make", 10, 20), ("got", 10, 20),
                      ("make", 20, 23), ("got", 20, 23)]
    assert [p.shape for p in pieces] == [(2, 10, 3), (2, 10, 3), (2, 3, 3)]
    assert torch.equal(torch.cat(pieces, 1), torch.cat([coord, cell[..., :1]], -1))
    assert list(decode_in_chunks(Echo(), None, None, 0, queries)) == []
    for bad in (0, -5):
        with pytest.raises(ValueError, match="chunk must be >= 1"):
            next(decode_in_chunks(Echo(), None, None, 23, queries, chunk=bad))


def test_evaluation_and_predict_decode_through_the_one_chunked_decoder(monkeypatch):
    import harness.evaluate
    import upsamplers.base
    from harness.evaluate import super_resolve

    calls = []
    real = upsamplers.base.decode_in_chunks

    def spy(model, inp, feat, n, queries, chunk=DEFAULT_CHUNK):
        calls.append((n, chunk))
        return real(model, inp, feat, n, queries, chunk)

    monkeypatch.setattr(harness.evaluate, "decode_in_chunks", spy)
    monkeypatch.setattr(upsamplers.base, "decode_in_chunks", spy)
    torch.manual_seed(4)
    model = build("liif").eval()
    lr = torch.rand(3, 8, 9)
    whole = super_resolve(model, lr, 2.0, chunk=10 ** 6)
    assert torch.equal(super_resolve(model, lr, 2.0, chunk=50), whole)
    coord, cell = grid_queries(1, 16, 18)
    model.predict(torch.randn(1, 3, 8, 9), coord, cell, chunk=40)
    model.predict(torch.randn(1, 3, 8, 9), coord, cell)
    assert calls == [(288, 10 ** 6), (288, 50), (288, 40), (288, DEFAULT_CHUNK)]


def test_the_chunk_default_is_one_number():
    import inspect

    from harness import evaluate
    from harness.cli import build_parser
    from harness.config import ROOT, load_config
    from upsamplers.base import ArbitraryScaleUpsampler, decode_in_chunks

    defaults = [inspect.signature(f).parameters["chunk"].default
                for f in (decode_in_chunks, ArbitraryScaleUpsampler.predict, evaluate.super_resolve,
                          evaluate.super_resolve_routed, evaluate.evaluate_rows)]
    assert defaults == [DEFAULT_CHUNK] * 5 and DEFAULT_CHUNK == 30000
    args = build_parser().parse_args(["upscale", "in.png", "--scale", "2", "--checkpoint", "c.pth", "-o", "o.png"])
    assert args.chunk == DEFAULT_CHUNK
    import yaml

    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    assert schema["properties"]["evaluation"]["properties"]["chunk"]["default"] == DEFAULT_CHUNK
    for cfg in ("default.yaml", "paper.yaml"):
        assert load_config(ROOT / "config" / cfg)["evaluation"]["chunk"] == DEFAULT_CHUNK


@pytest.mark.parametrize("name", NAMES)
def test_gen_feat_is_returned_not_stored(name):
    torch.manual_seed(2)
    model = build(name).eval()
    a, b = torch.randn(1, 3, 5, 6), torch.randn(1, 3, 5, 6)
    coord, cell = grid_queries(1, 9, 11)
    before = set(vars(model))
    with torch.no_grad():
        fa, fb = model.gen_feat(a), model.gen_feat(b)
        assert set(vars(model)) == before
        # querying image a after image b's features were made still answers for a
        torch.testing.assert_close(model.query_rgb(a, fa, coord, cell), model(a, coord, cell))
        torch.testing.assert_close(model.query_rgb(b, fb, coord, cell), model(b, coord, cell))
    # without autograd: the decoder's per-pixel map, banded (upsamplers.bands)
    width = {"lte": 512, "liif": 256, "metasr": 3 * 257}[name]
    assert isinstance(fa, BandedMap) and fa.feat.shape == (1, 64, 5, 6)
    assert fa.rows(1, 4).shape == (1, 3, 6, width)
    with torch.enable_grad():  # with autograd: the per-query form's features
        fa = model.gen_feat(a)
    if name == "lte":
        assert isinstance(fa, LTEFeatures) and fa.coef.shape == (1, 256, 5, 6)
    elif name == "liif":  # the first Linear's feature part on each LR pixel
        assert fa.shape == (1, 256, 5, 6)
    else:
        assert isinstance(fa, torch.Tensor) and fa.shape == (1, 64, 5, 6)


@pytest.mark.parametrize("name", NAMES)
def test_training_gradients_reach_every_parameter(name):
    torch.manual_seed(3)
    model = build(name, encoder=StubEncoder(8))
    coord, cell = grid_queries(2, 10, 10)
    model(torch.randn(2, 3, 4, 4), coord, cell).abs().mean().backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), key


def test_scale_from_cell_by_hand():
    # HR 10 rows from LR 4 rows: cell_y = 0.2, s = 2 / (0.2 * 4) = 2.5; second item x3
    cell = torch.stack([make_cell((10, 10), 5), make_cell((12, 9), 5)])
    torch.testing.assert_close(scale_from_cell(cell, 4), torch.tensor([2.5, 3.0]))


@pytest.mark.parametrize("name", NAMES)
def test_scale_reaches_the_encoder(name):
    enc = StubEncoder(4)
    model = build(name, encoder=enc)
    inp = torch.randn(2, 3, 4, 4)
    coord, cell = grid_queries(2, 10, 10)
    model(inp, coord, cell)  # derived from the cell
    torch.testing.assert_close(enc.seen_scales[-1], torch.tensor([2.5, 2.5]))
    model.predict(inp, coord, cell, scale=3.0, chunk=40)  # given: passed on untouched
    assert enc.seen_scales[-1] == 3.0
    s = torch.tensor([1.5, 4.0])
    model(inp, coord, cell, scale=s)
    assert enc.seen_scales[-1] is s
    assert len(enc.seen_scales) == 3  # predict ran the encoder once, not per chunk


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name):
    torch.manual_seed(4)
    model = build(name).eval()
    inp = torch.randn(1, 3, 6, 7)
    coord, cell = grid_queries(1, 13, 15)
    cpu = model.predict(inp, coord, cell, chunk=50)
    gpu = model.cuda().predict(inp.cuda(), coord.cuda(), cell.cuda(), chunk=50)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


# -- LIIF -----------------------------------------------------------------------
def linear_liif(feat):
    """LIIF whose decoder returns feature channel 0 as red: the blend is then visible."""
    model = build("liif", encoder=FixedEncoder(feat), hidden_list=[], feat_unfold=False,
                  cell_decode=False)
    zero_(model.imnet)
    with torch.no_grad():
        model.imnet.layers[0].weight[0, 0] = 1.0
    return model


def test_liif_area_weights_by_hand():
    # LR 4x4, value 10*row + col. Query (0.1, -0.4) lies at pixel position
    # (1.7, 0.7): corners (1,0) (1,1) (2,0) (2,1) with bilinear weights
    # 0.3*0.3, 0.3*0.7, 0.7*0.3, 0.7*0.7 -> 17.7.
    model = linear_liif(ramp(4, 4))
    coord = torch.tensor([[[0.1, -0.4]]])
    cell = torch.full((1, 1, 2), 0.1)
    out = model(torch.zeros(1, 3, 4, 4), coord, cell)
    assert out[0, 0, 0].item() == pytest.approx(17.7, abs=1e-5)
    # the weights themselves from the corners' relative coordinates
    # (coord - centre) * (h, w), i.e. twice the pixel offsets, in LIIF's corner order
    rels = [torch.tensor([[[1.4, 1.4]]]), torch.tensor([[[1.4, -0.6]]]),
            torch.tensor([[[-0.6, 1.4]]]), torch.tensor([[[-0.6, -0.6]]])]
    weights = [w.item() for w in area_weights(rels)]
    assert weights == pytest.approx([0.09, 0.21, 0.21, 0.49], abs=1e-6)


def test_liif_linear_decoder_is_bilinear_inside():
    torch.manual_seed(5)
    feat = torch.randn(1, 6, 9)
    model = linear_liif(feat)
    h, w = 6, 9
    # queries whose pixel positions lie strictly between the outermost centres
    pos = torch.rand(1, 200, 2) * (torch.tensor([h - 1.1, w - 1.1])) + 0.05
    coord = (pos + 0.5) / torch.tensor([h, w]) * 2 - 1
    out = model(torch.zeros(1, 3, h, w), coord, torch.full((1, 200, 2), 0.05))[..., 0]
    ref = F.grid_sample(feat[None], coord.flip(-1).unsqueeze(1), mode="bilinear",
                        align_corners=False)[0, 0, 0]
    torch.testing.assert_close(out[0], ref, atol=1e-5, rtol=0)


def test_liif_constant_features_give_constant_output():
    torch.manual_seed(6)
    c = 4
    model = build("liif", encoder=FixedEncoder(torch.full((c, 5, 6), 0.7)), hidden_list=[8, 8],
                  feat_unfold=False)
    with torch.no_grad():  # make the decoder blind to the relative coordinate
        model.imnet.layers[0].weight[:, c:c + 2] = 0
    coord, cell = grid_queries(1, 13, 17)
    out = model(torch.full((1, 3, 5, 6), 0.3), coord, cell)
    rel_cell = cell[0, 0] * torch.tensor([5.0, 6.0])
    expected = model.imnet(torch.cat([torch.full((c,), 0.7), torch.zeros(2), rel_cell]))
    torch.testing.assert_close(out[0], expected.expand(13 * 17, 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("feat_unfold,cell_decode,hidden", [
    (True, True, [16, 16]), (False, True, [8]), (True, False, []), (False, False, [8, 8])])
def test_liif_first_layer_per_pixel_equals_reference_form(feat_unfold, cell_decode, hidden):
    # The reference builds cat([unfolded feature, rel_coord, rel_cell]) per query
    # and corner and runs the whole MLP on it; ours runs the first Linear's feature
    # part as a convolution on the LR grid. Same function, same weights.
    torch.manual_seed(11)
    c, h, w = 5, 7, 9
    feat = torch.randn(2, c, h, w)
    model = build("liif", encoder=FixedEncoder(feat[0]), hidden_list=hidden,
                  feat_unfold=feat_unfold, cell_decode=cell_decode)
    with torch.no_grad():
        for p in model.imnet.parameters():
            p.normal_()
    coord, cell = grid_queries(2, 23, 31)
    coord = coord + 0.01 * torch.randn_like(coord)  # off-centre queries, some past the border
    unfolded = F.unfold(feat, 3, padding=1).view(2, 9 * c, h, w) if feat_unfold else feat
    rel_cell = cell * torch.tensor([h, w])

    def reference_corner(shifted, rel_coord):
        q = F.grid_sample(unfolded, shifted.flip(-1).unsqueeze(1), mode="nearest",
                          align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        parts = [q, rel_coord] + ([rel_cell] if cell_decode else [])
        return model.imnet(torch.cat(parts, dim=-1))

    expected = ensemble_query(coord, h, w, True, reference_corner)
    with torch.no_grad():
        got = model.query_rgb(None, model.prepare(feat), coord, cell)
    assert got.shape == (2, 23 * 31, 3)
    torch.testing.assert_close(got, expected.detach(), atol=1e-4, rtol=1e-5)
    # and the scale of the outputs makes that tolerance meaningful
    assert expected.abs().mean() > 1.0


# -- LTE ------------------------------------------------------------------------
def test_lte_basis_by_hand():
    # hidden_dim 4: two frequency pairs (f0, f1) and (f2, f3) multiply (dy, dx).
    h, w = 4, 5
    model = build("lte", encoder=FixedEncoder(torch.zeros(2, h, w)), hidden_dim=4, hidden_list=[])
    zero_(model)
    f = [1.0, 0.0, 0.5, 0.25]
    phase = torch.tensor([[0.5, 0.0], [0.0, 0.25]])
    with torch.no_grad():
        model.freq.bias.copy_(torch.tensor(f))
        model.coef.bias.fill_(1.0)
        model.phase.weight.copy_(phase)
        lin = model.imnet.layers[0].weight  # input = [cos x0, cos x1, sin x0, sin x1]
        lin[0, 0] = lin[1, 1] = lin[2, 2] = 1.0
    # query at pixel position (1.7, 0.2); HR grid 10 x 15 -> cell (0.2, 2/15)
    coord = torch.tensor([[[(1.7 + 0.5) / h * 2 - 1, (0.2 + 0.5) / w * 2 - 1]]])
    cell = torch.tensor([[[0.2, 2 / 15]]])
    out = model(torch.full((1, 3, h, w), 0.3), coord, cell)[0, 0]
    cy, cx = 0.2 * h, 2 / 15 * w  # cell * (h, w) = 2 / s: 0.8, 0.667
    p0, p1 = 0.5 * cy, 0.25 * cx
    expected = torch.zeros(3)
    # corners: pixel offsets (0.7 | -0.3, 0.2 | -0.8), doubled (the reference's unit)
    for dy in (1.4, -0.6):
        for dx in (0.4, -1.6):
            weight = (1 - abs(dy) / 2) * (1 - abs(dx) / 2)  # bilinear
            x0 = f[0] * dy + f[1] * dx + p0
            x1 = f[2] * dy + f[3] * dx + p1
            expected += weight * torch.tensor([math.cos(math.pi * x0), math.cos(math.pi * x1),
                                               math.sin(math.pi * x0)])
    torch.testing.assert_close(out, expected + 0.3, atol=1e-5, rtol=0)


def test_lte_constant_features_give_constant_output():
    torch.manual_seed(7)
    model = build("lte", encoder=FixedEncoder(torch.full((4, 5, 6), 0.5)), hidden_dim=8,
                  hidden_list=[8])
    with torch.no_grad():  # constant amplitudes, zero frequencies: only the phase remains
        model.coef.weight.zero_()
        model.freq.weight.zero_()
        model.freq.bias.zero_()
    coord, cell = grid_queries(1, 11, 13)
    out = model(torch.full((1, 3, 5, 6), -0.2), coord, cell)
    x = model.phase(cell[0, 0] * torch.tensor([5.0, 6.0]))
    basis = torch.cat([torch.cos(math.pi * x), torch.sin(math.pi * x)]) * model.coef.bias
    expected = model.imnet(basis) - 0.2
    torch.testing.assert_close(out[0], expected.expand(11 * 13, 3), atol=1e-6, rtol=0)


def test_lte_skip_is_bilinear_with_border_padding():
    model = build("lte", encoder=StubEncoder(4), hidden_dim=4, hidden_list=[])
    zero_(model.imnet)
    img = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(1, 3, 2, 2)
    coord = torch.tensor([[[0.0, 0.0], [-0.99, -0.99], [0.5, -0.5], [0.99, 0.0]]])
    out = model(img, coord, torch.full((1, 4, 2), 0.5))[0, :, 0]
    # centre: mean; outside the outer centres: clamped to the border pixel
    torch.testing.assert_close(out, torch.tensor([2.5, 1.0, 3.0, 3.5]), atol=1e-6, rtol=0)


# -- MetaSR ---------------------------------------------------------------------
def test_metasr_positions_by_hand():
    # LR 4x4 -> HR 10x10 (s = 2.5). HR pixel (3, 7): centre (-0.3, 0.5), cell 0.2,
    # top-left corner (-0.4, 0.4) = LR position (1.2, 2.8): LR pixel (1, 2),
    # offsets (0.2, 0.8); 1/s = 0.4.
    coord = torch.tensor([[[-0.3, 0.5]]])
    cell = torch.tensor([[[0.2, 0.2]]])
    read_at, meta_in = meta_positions(coord, cell, 4, 4)
    torch.testing.assert_close(meta_in[0, 0], torch.tensor([0.2, 0.8, 0.4]), atol=1e-5, rtol=0)
    pix = ((read_at + 1) / 2 * 4).floor()
    assert pix[0, 0].tolist() == [1.0, 2.0]
    # x2: HR pixel 2's corner lies exactly on the LR border at -0.5 -> the pixel below, offset 0
    coord = make_coord((8, 8))[2 * 8 + 5].view(1, 1, 2)
    read_at, meta_in = meta_positions(coord, torch.full((1, 1, 2), 0.25), 4, 4)
    assert ((read_at[0, 0, 0] + 1) / 2 * 4).floor().item() == 1.0
    torch.testing.assert_close(meta_in[0, 0], torch.tensor([0.0, 0.5, 0.5]), atol=1e-5, rtol=0)


def test_metasr_reads_unfolded_feature_with_predicted_weights():
    model = build("metasr", encoder=FixedEncoder(ramp(4, 4)), hidden_list=[4])
    zero_(model.imnet)
    with torch.no_grad():  # weight matrix (9C, 3) = flat index k * 3 + rgb
        model.imnet.layers[2].bias[4 * 3 + 0] = 1.0  # red   <- the pixel itself
        model.imnet.layers[2].bias[5 * 3 + 2] = 1.0  # blue  <- its right neighbour
    out = model(torch.zeros(1, 3, 4, 4), torch.tensor([[[-0.3, 0.5]]]), torch.full((1, 1, 2), 0.2))
    torch.testing.assert_close(out[0, 0], torch.tensor([12.0, 0.0, 13.0]))


# -- with a real extractor ------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_end_to_end_with_edsr_baseline(name):
    pytest.importorskip("extractors.edsr")
    torch.manual_seed(8)
    width = {"liif": {"hidden_list": [32, 32]}, "lte": {"hidden_dim": 16, "hidden_list": [32]},
             "metasr": {"hidden_list": [16]}}[name]
    model = create_model(name, "edsr-baseline", {"n_resblocks": 2, "n_feats": 16}, width).eval()
    assert model.encoder.out_dim == 16
    assert any(k.startswith("encoder.body.") for k in model.state_dict())
    inp = torch.rand(1, 3, 7, 9) * 2 - 1
    coord, cell = grid_queries(1, 20, 25)
    out = model.predict(inp, coord, cell, chunk=123)
    assert out.shape == (1, 500, 3) and torch.isfinite(out).all()
    with torch.no_grad():
        torch.testing.assert_close(out, model(inp, coord, cell), atol=1e-6, rtol=0)

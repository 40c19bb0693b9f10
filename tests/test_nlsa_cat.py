"""NLSA and CAT-R-2: paper-width sizes, reference key layouts, shapes with every
upsampler, the NLSA attention against a direct (all-rounds-at-once) form, CAT's
padding and shift masks, FLOPs terms, tiling overlap, and released-body loading.

Paper-width models are only built on the meta device (no weights allocated).
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import extractors.nlsa as nlsa_mod
from extractors import create_extractor, extractor_names
from extractors.cat import pad_symmetric, rect_shift_mask, window_merge, window_split
from extractors.nlsa import NonLocalSparseAttention, lsh_buckets
from harness import checkpoint as ckpt
from harness.cli import main
from harness.errors import HarnessError
from harness.tiling import conv_receptive_radius, default_tile_overlap
from harness.flops import count_flops
from harness.flops.sizefit import SmallCounts, fit_terms
from harness.release_format import load_release_body
from upsamplers import create_model, upsampler_names
from upsamplers.coords import make_cell, make_coord

NAMES = ["nlsa", "cat-r-2"]
PARAMS = {"nlsa": 39_576_472, "cat-r-2": 11_628_100}       # paper Table 3: 39.58M, 11.63M
PAPER_PARAMS = {"nlsa": 39.58e6, "cat-r-2": 11.63e6}
SMALL = {
    "nlsa": dict(n_resblocks=4, n_feats=16, attention_every=2, chunk_size=16, out_dim=24),
    "cat-r-2": dict(img_size=16, embed_dim=64, depth=(2, 2), num_heads=(2, 2), split_size_0=(2, 2),
                    split_size_1=(8, 8), out_dim=24),
}
# Reference state-dict layout: (number of keys, {key: shape}, forbidden prefixes)
KEYS = {
    "nlsa": (158, {
        "sub_mean.weight": (3, 3, 1, 1), "add_mean.bias": (3,), "head.0.weight": (256, 3, 3, 3),
        "body.0.conv_match.0.weight": (64, 256, 3, 3), "body.0.conv_assembly.0.weight": (256, 256, 1, 1),
        "body.1.body.0.weight": (256, 256, 3, 3), "body.8.body.2.bias": (256,),
        "body.9.conv_match.0.bias": (64,), "body.18.conv_assembly.0.bias": (256,),
        "body.27.conv_match.0.weight": (64, 256, 3, 3), "body.36.conv_assembly.0.weight": (256, 256, 1, 1),
        "body.35.body.2.weight": (256, 256, 3, 3), "body.37.weight": (256, 256, 3, 3),
        "proj.weight": (64, 256, 3, 3), "proj.bias": (64,),
    }, ("tail", "body.38.")),
    "cat-r-2": (1714, {
        "conv_first.weight": (180, 3, 3, 3), "before_RG.1.weight": (180,),
        "layers.0.blocks.0.qkv.weight": (540, 180), "layers.0.blocks.0.norm1.bias": (180,),
        "layers.0.blocks.0.proj.weight": (180, 180),
        "layers.0.blocks.0.attns.0.rpe_biases": (217, 2),
        "layers.0.blocks.0.attns.1.relative_position_index": (64, 64),
        "layers.0.blocks.0.attns.0.pos.pos_proj.weight": (5, 2),
        "layers.0.blocks.0.attns.0.pos.pos1.0.weight": (5,),
        "layers.0.blocks.0.attns.1.pos.pos3.2.weight": (3, 5),
        "layers.0.blocks.0.mlp.fc1.weight": (360, 180), "layers.5.blocks.5.mlp.fc2.bias": (180,),
        "layers.0.blocks.0.norm2.weight": (180,), "layers.0.blocks.0.get_v.weight": (180, 1, 3, 3),
        "layers.0.blocks.1.attn_mask_0": (64, 64, 64), "layers.5.blocks.5.attn_mask_1": (64, 64, 64),
        "layers.5.conv.weight": (180, 180, 3, 3), "norm.bias": (180,),
        "conv_after_body.weight": (180, 180, 3, 3), "conv_before_upsample.0.weight": (64, 180, 3, 3),
    }, ("upsample", "conv_last", "layers.6.", "layers.0.blocks.6.", "layers.0.blocks.0.attn_mask",
        "layers.0.blocks.2.attn_mask", "mean")),
}
TAILS = {  # the reference's tails at the SMALL widths (x2 pixel shuffle)
    "nlsa": {"tail.0.0.weight": (64, 16, 3, 3), "tail.0.0.bias": (64,),
             "tail.1.weight": (3, 16, 3, 3), "tail.1.bias": (3,)},
    "cat-r-2": {"upsample.0.weight": (96, 24, 3, 3), "upsample.0.bias": (96,),
                "conv_last.weight": (3, 24, 3, 3), "conv_last.bias": (3,)},
}


def _meta(name):
    with torch.device("meta"):
        return create_extractor(name)


def small(name, seed=0):
    torch.manual_seed(seed)
    return create_extractor(name, **SMALL[name]).eval()


def test_registered():
    assert set(NAMES) <= set(extractor_names())


@pytest.mark.parametrize("name", NAMES)
def test_parameters_at_paper_width(name):
    n = sum(p.numel() for p in _meta(name).parameters())
    assert n == PARAMS[name]
    assert abs(n - PAPER_PARAMS[name]) <= 0.05e6


def test_models_verb_lists_them(capsys):
    assert main(["models", "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["extractors"]
    assert {k: counts[k] for k in NAMES} == PARAMS


@pytest.mark.parametrize("name", NAMES)
def test_reference_key_layout(name):
    count, shapes, forbidden = KEYS[name]
    sd = _meta(name).state_dict()
    assert len(sd) == count
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    for bad in forbidden:
        assert not any(k.startswith(bad) for k in sd), bad


@pytest.mark.parametrize("name", NAMES)
def test_attributes(name):
    model = _meta(name)
    assert model.out_dim == 64 and model.scale_aware is False
    assert getattr(model, "window_size", None) == (16 if name == "cat-r-2" else None)


@pytest.mark.parametrize("up", upsampler_names())
@pytest.mark.parametrize("name", NAMES)
def test_odd_sizes_with_every_upsampler(name, up):
    torch.manual_seed(0)
    hidden = {"lte": dict(hidden_dim=16, hidden_list=[16]), "liif": dict(hidden_list=[16]),
              "metasr": dict(hidden_list=[16])}[up]
    model = create_model(up, name, extractor_args=SMALL[name], upsampler_args=hidden).eval()
    inp = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        feat = model.encoder(inp)
        assert feat.shape == (1, 24, 37, 53)
        coord = make_coord((74, 106)).unsqueeze(0)
        cell = make_cell((74, 106), coord.shape[1]).unsqueeze(0)
        out = model.predict(inp, coord, cell, 2.0, chunk=3000)
    assert out.shape == (1, 74 * 106, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [(5, 3), (1, 9), (16, 16)])
def test_tiny_inputs(name, size):
    with torch.no_grad():
        assert small(name)(torch.randn(1, 3, *size)).shape == (1, 24, *size)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_trainable_parameter(name):
    model = small(name).train()
    model(torch.randn(2, 3, 16, 16)).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    # CAT's last position-bias layer's bias adds one constant to all logits of a head,
    # which the softmax cancels: its gradient is 0 up to rounding
    assert [n for n in missing if not n.endswith("pos3.2.bias")] == []


# -- NLSA ----------------------------------------------------------------------
def direct_nlsa(module: NonLocalSparseAttention, x: torch.Tensor) -> torch.Tensor:
    """The attention with all hash rounds at once (the paper's Eqs., as the reference
    lays them out): joint sort with round offsets, tail fill, adjacent chunks by roll."""
    b, c, h, w = x.shape
    length, chunk, nh = h * w, module.chunk_size, module.n_hashes
    match = module.conv_match(x).flatten(2).transpose(1, 2)
    value = module.conv_assembly(x).flatten(2).transpose(1, 2)
    buckets = lsh_buckets(length, chunk)
    rot = module.rotations(match.shape[-1], buckets // 2, match)
    proj = torch.einsum("blc,cri->brli", match, rot)
    codes = torch.cat([proj, -proj], -1).argmax(-1) + buckets * torch.arange(nh).view(1, nh, 1)
    order = torch.sort(codes.flatten(1), dim=-1, stable=True).indices % length  # (B, nh*L)
    q = match.gather(1, order[..., None].expand(-1, -1, match.shape[-1])).view(b, nh, length, -1)
    v = value.gather(1, order[..., None].expand(-1, -1, c)).view(b, nh, length, c)
    fill = -length % chunk
    idx = torch.cat([torch.arange(length), (torch.arange(fill) + length - fill) % length])
    q, v = q[:, :, idx].unflatten(2, (-1, chunk)), v[:, :, idx].unflatten(2, (-1, chunk))
    k = F.normalize(q, dim=-1, eps=5e-5)
    k = torch.cat([k, k.roll(1, 2), k.roll(-1, 2)], dim=3)
    v = torch.cat([v, v.roll(1, 2), v.roll(-1, 2)], dim=3)
    score = torch.einsum("bhkic,bhkjc->bhkij", q, k)
    lse = torch.logsumexp(score, -1, keepdim=True)
    out = torch.einsum("bhkij,bhkjc->bhkic", torch.exp(score - lse), v).flatten(2, 3)[:, :, :length]
    lse = lse.flatten(2)[:, :, :length]
    inv = torch.argsort(torch.sort(codes.flatten(1), dim=-1, stable=True).indices, dim=-1)
    out = out.flatten(1, 2).gather(1, inv[..., None].expand(-1, -1, c)).view(b, nh, length, c)
    lse = lse.flatten(1).gather(1, inv).view(b, nh, length, 1)
    out = (out * torch.softmax(lse, dim=1)).sum(1)
    return out.transpose(1, 2).reshape(b, c, h, w) * module.res_scale + x


@pytest.mark.parametrize("size", [(9, 11), (12, 12), (17, 23), (3, 5)])
def test_nlsa_attention_equals_the_direct_form(size, monkeypatch):
    torch.manual_seed(3)
    module = NonLocalSparseAttention(channels=8, reduction=2, n_hashes=3, chunk_size=16, res_scale=0.5).eval()
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        expected = direct_nlsa(module, x)
        assert torch.allclose(module(x), expected, atol=1e-5)
        monkeypatch.setattr(nlsa_mod, "BLOCK_ELEMENTS", 1)  # one chunk per block
        assert torch.allclose(module(x), expected, atol=1e-5)


def test_nlsa_buckets_follow_the_reference_rule():
    assert [lsh_buckets(n, 144) for n in (10, 143, 144, 287, 288, 431, 432, 18287, 18288, 10**7)] == \
        [2, 2, 2, 2, 2, 2, 4, 126, 128, 128]
    assert lsh_buckets(144 * 5, 144) == 6  # 5 chunks: rounded up to even


def test_nlsa_eval_is_deterministic_training_draws_fresh_rotations():
    model = small("nlsa")
    x = torch.randn(1, 3, 20, 20)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(1)
        a = model(x)
        torch.manual_seed(2)
        b = model(x)
        torch.manual_seed(1)
        assert torch.equal(model(x), a) and not torch.equal(a, b)


def small_nlsa_flops(h: int, w: int) -> int:
    """fvcore's count of ``small("nlsa")``: convs per pixel + attention per chunked
    pixel + hashing per pixel and rotation (the decomposition the fast counter fits)."""
    n, c, cr, nh, chunk, n_att = 4, 16, 4, 4, 16, 3  # 4 blocks; NLSA at the start and after every 2
    per_pixel = 3 * c * 9 + 2 * n * c * c * 9 + c * c * 9 + c * 24 * 9 + n_att * (c * cr * 9 + c * c)
    terms = small("nlsa").flops_terms(h, w)
    return per_pixel * terms["HW"] + n_att * (nh * cr * terms["hashed"] + nh * 3 * chunk * (cr + c) * terms["chunked"])


def test_nlsa_flops_are_linear_in_its_terms():
    model = small("nlsa")
    for h, w in [(5, 7), (9, 11), (20, 13)]:
        total, _, unsupported = count_flops(model, (torch.randn(1, 3, h, w),))
        assert unsupported == {} and total == small_nlsa_flops(h, w), (h, w)


def test_flops_verb_counts_nlsa(capsys):
    # fast == fvcore's direct count for every extractor: tests/test_flops.py
    args = ["flops", "--extractor", "nlsa", "--extractor-args", json.dumps(SMALL["nlsa"]), "--size", "37x53"]
    assert main(args + ["--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["flops"] == small_nlsa_flops(37, 53) and res["method"] == "fast"


def test_size_terms_that_miss_a_cost_do_not_verify():
    model = small("nlsa")
    counts = SmallCounts(model)
    assert fit_terms(counts, model.flops_terms, "nlsa").flops(37, 29) == counts(37, 29)
    without_hashing = lambda h, w: {k: v for k, v in model.flops_terms(h, w).items() if k != "hashed"}
    with pytest.raises(RuntimeError, match="not linear in its size terms"):
        fit_terms(counts, without_hashing, "nlsa")


def test_nlsa_tiles_are_not_claimed_exact():
    model = small("nlsa")
    radius, local = conv_receptive_radius(model)
    assert radius == 1 + 8 + 1 + 3 + 1 and not local  # head, 4 blocks x 2, body, 3 matches, proj
    assert default_tile_overlap(model) == min(radius, 64)
    assert default_tile_overlap(small("cat-r-2")) == 64


# -- CAT ----------------------------------------------------------------------
def test_cat_pads_like_the_reference_flip_concatenation():
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).view(1, 2, 5, 7)
    ref = torch.cat([x, torch.flip(x, [2])], 2)[:, :, :8]
    ref = torch.cat([ref, torch.flip(ref, [3])], 3)[:, :, :, :8]
    assert torch.equal(pad_symmetric(x, 8), ref)
    y = pad_symmetric(x[:, :, :2, :3], 8)  # more padding than pixels: the mirror repeats
    assert y.shape == (1, 2, 8, 8)
    assert y[0, 0, :, 0].tolist() == [0, 7, 7, 0, 0, 7, 7, 0]
    assert y[0, 0, 0].tolist() == [0, 1, 2, 2, 1, 0, 0, 1]


def test_cat_window_split_round_trip_and_order():
    x = torch.arange(4 * 8, dtype=torch.float32).view(4, 8, 1)
    win = window_split(x, (2, 4))
    assert win.shape == (4, 8, 1)
    assert win[1, :, 0].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    assert torch.equal(window_merge(win, (2, 4), 4, 8), x)


def test_cat_shift_mask_hand_computed():
    # 4 x 8 map, 2 x 4 windows rolled by (1, 2): the last window mixes 4 regions
    mask = rect_shift_mask(4, 8, (2, 4), (1, 2))
    assert mask.shape == (4, 8, 8)
    assert (mask[0] == 0).all()  # the top-left window is one region
    last = (mask[3] == 0).float()
    # pixels (r, c) of the last window: region (r >= 1, c >= 2)
    region = [(r >= 1) * 2 + (c >= 2) for r in range(2) for c in range(4)]
    expected = torch.tensor([[float(a == b) for b in region] for a in region])
    assert torch.equal(last, expected)
    assert set(mask.unique().tolist()) == {0.0, -100.0}


def test_cat_stored_masks_equal_computed_ones():
    model = small("cat-r-2")
    block = model.layers[0].blocks[1]
    assert torch.equal(block.attn_mask_0, rect_shift_mask(16, 16, (2, 8), (1, 4)))
    assert torch.equal(block.attn_mask_1, rect_shift_mask(16, 16, (8, 2), (4, 1)))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        stored = model(x)
        block.attn_mask_0.add_(1.0)  # a wrong stored mask must change the output at 16 x 16
        assert not torch.allclose(model(x), stored)


def test_cat_crop_equals_explicit_padding():
    model = small("cat-r-2")
    x = torch.randn(1, 3, 21, 10)
    with torch.no_grad():
        full = model(pad_symmetric(x, model.window_size))
        assert torch.allclose(model(x), full[..., :21, :10], atol=1e-6)


# -- released bodies ------------------------------------------------------------
def _release_state(name, model):
    sd = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("proj.")}
    gen = torch.Generator().manual_seed(7)
    sd.update({k: torch.randn(shape, generator=gen) for k, shape in TAILS[name].items()})
    return sd


@pytest.mark.parametrize("name", NAMES)
def test_released_body_loads_strictly_tail_dropped(name, tmp_path):
    source = small(name, seed=1)
    sd = _release_state(name, source)
    path = tmp_path / "release.pth"
    torch.save(sd if name == "nlsa" else {"params": sd}, path)  # NLSN: plain; CAT: BasicSR
    target = small(name, seed=2)
    meta = load_release_body(target, name, path)
    assert meta["dropped"] == list(TAILS[name])
    assert meta["not_in_release"] == (["proj.weight", "proj.bias"] if name == "nlsa" else [])
    for key, value in target.state_dict().items():
        if not key.startswith("proj."):
            assert torch.equal(value, sd[key]), key
    if name == "cat-r-2":
        x = torch.randn(1, 3, 19, 21)
        with torch.no_grad():
            assert torch.equal(target(x), source(x))


def test_released_body_with_a_missing_key_is_refused(tmp_path):
    sd = _release_state("nlsa", small("nlsa"))
    del sd["body.0.conv_match.0.weight"]
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(HarnessError, match="1 missing keys .*body.0.conv_match.0.weight"):
        load_release_body(small("nlsa"), "nlsa", tmp_path / "bad.pt")


def test_liif_format_file_with_an_nlsa_encoder(tmp_path):
    torch.manual_seed(0)
    model = create_model("liif", "nlsa", extractor_args=SMALL["nlsa"], upsampler_args={"hidden_list": [16]})
    args = {"encoder_spec": {"name": "nlsa", "args": {**SMALL["nlsa"], "no_upsampling": True, "scale": 2}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16]}}}
    torch.save({"model": {"name": "liif", "args": args, "sd": model.state_dict()}, "epoch": 1},
               tmp_path / "nlsa-liif.pth")
    loaded, meta = ckpt.load_model(tmp_path / "nlsa-liif.pth")
    assert meta["spec"]["extractor"] == "nlsa" and meta["dropped_encoder_args"] == ["scale"]
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)

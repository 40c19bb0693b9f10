"""The static extractors: EDSR-baseline, RDN, RCAN, SwinIR (no upsampling tail).

One parametrised set of checks over the registry names, plus SwinIR-specific
checks (window padding, shift masks, SDPA vs explicit attention). Default
configurations are only ever built on the meta device (no weights allocated).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from extractors import EXTRACTORS, create_extractor, extractor_names

STATIC = ["edsr-baseline", "rdn", "rcan", "swinir"]

# Exact parameter counts of the reference encoders (LIIF/LTE, no_upsampling).
PARAMS = {"edsr-baseline": 1_220_440, "rdn": 21_973_952, "rcan": 15_295_224, "swinir": 11_603_044}
FROZEN = {"edsr-baseline": 24, "rdn": 0, "rcan": 24, "swinir": 0}

# Small widths for forward passes; every model still outputs 64 channels.
TINY = {
    "edsr-baseline": dict(n_resblocks=2, n_feats=64),
    "rdn": dict(G0=64, D=2, C=2, G=16),
    "rcan": dict(n_resgroups=2, n_resblocks=2, n_feats=64),
    "swinir": dict(embed_dim=30, depths=(2, 2), num_heads=(2, 2)),
}

# State-dict keys of the released LIIF/LTE encoders (without "encoder."):
# (number of keys, {key: shape} that must exist, forbidden key prefixes; an
# entry starting with "." is forbidden anywhere inside a key).
KEYS = {
    "edsr-baseline": (72, {
        "sub_mean.weight": (3, 3, 1, 1), "sub_mean.bias": (3,), "add_mean.weight": (3, 3, 1, 1),
        "add_mean.bias": (3,), "head.0.weight": (64, 3, 3, 3), "body.0.body.0.weight": (64, 64, 3, 3),
        "body.15.body.2.bias": (64,), "body.16.weight": (64, 64, 3, 3),
    }, ("tail", "body.17.")),
    "rdn": (296, {
        "SFENet1.weight": (64, 3, 3, 3), "SFENet2.bias": (64,),
        "RDBs.0.convs.0.conv.0.weight": (64, 64, 3, 3), "RDBs.15.convs.7.conv.0.weight": (64, 512, 3, 3),
        "RDBs.15.LFF.weight": (64, 576, 1, 1), "GFF.0.weight": (64, 1024, 1, 1), "GFF.1.weight": (64, 64, 3, 3),
    }, ("UPNet", "RDBs.16.")),
    "rcan": (1628, {
        "sub_mean.weight": (3, 3, 1, 1), "add_mean.bias": (3,), "head.0.weight": (64, 3, 3, 3),
        "body.0.body.0.body.0.weight": (64, 64, 3, 3), "body.0.body.0.body.2.bias": (64,),
        "body.0.body.0.body.3.conv_du.0.weight": (4, 64, 1, 1),
        "body.9.body.19.body.3.conv_du.2.bias": (64,), "body.9.body.20.weight": (64, 64, 3, 3),
        "body.10.weight": (64, 64, 3, 3),
    }, ("tail", "body.11.", "body.0.body.21.")),
    "swinir": (544, {
        "conv_first.weight": (180, 3, 3, 3), "patch_embed.norm.weight": (180,),
        "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": (225, 6),
        "layers.0.residual_group.blocks.0.attn.relative_position_index": (64, 64),
        "layers.0.residual_group.blocks.1.attn_mask": (36, 64, 64),
        "layers.5.residual_group.blocks.5.attn_mask": (36, 64, 64),
        "layers.0.residual_group.blocks.0.norm1.weight": (180,),
        "layers.0.residual_group.blocks.0.attn.qkv.weight": (540, 180),
        "layers.0.residual_group.blocks.0.attn.proj.bias": (180,),
        "layers.0.residual_group.blocks.0.norm2.bias": (180,),
        "layers.0.residual_group.blocks.0.mlp.fc1.weight": (360, 180),
        "layers.5.residual_group.blocks.5.mlp.fc2.weight": (180, 360),
        "layers.5.conv.weight": (180, 180, 3, 3), "norm.weight": (180,),
        "conv_after_body.weight": (180, 180, 3, 3), "conv_before_upsample.0.weight": (64, 180, 3, 3),
    }, (".blocks.0.attn_mask", ".blocks.2.attn_mask", "layers.6.", ".blocks.6.", "upsample.1", "conv_last",
        "absolute_pos_embed", "mean", "patch_unembed", "layers.0.patch_embed")),
}


def _default_on_meta(name):
    with torch.device("meta"):
        return create_extractor(name)


def _tiny(name, seed=0, **extra):
    torch.manual_seed(seed)
    return create_extractor(name, **TINY[name], **extra).eval()


def test_registry_holds_the_static_extractors():
    names = extractor_names()
    for name in STATIC:
        assert name in names and name in EXTRACTORS


@pytest.mark.parametrize("name", STATIC)
def test_parameter_count_at_default_config(name):
    model = _default_on_meta(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == FROZEN[name]


@pytest.mark.parametrize("name", STATIC)
def test_state_dict_keys_match_reference(name):
    count, shapes, forbidden = KEYS[name]
    sd = _default_on_meta(name).state_dict()
    assert len(sd) == count
    for key, shape in shapes.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    for bad in forbidden:
        assert not any(bad in k if bad.startswith(".") else k.startswith(bad) for k in sd), bad
    assert not any(k.startswith(("module.", "encoder.")) for k in sd)


@pytest.mark.parametrize("name", STATIC)
def test_attributes(name):
    model = _default_on_meta(name)
    assert model.out_dim == 64
    assert model.scale_aware is False
    assert model.window_size == (8 if name == "swinir" else None)


@pytest.mark.parametrize("name", STATIC)
def test_output_shape_any_size_and_scale_ignored(name):
    model = _tiny(name)
    x = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        y = model(x)
        y_scaled = model(x, scale=3.7)
    assert y.shape == (1, 64, 37, 53)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert torch.equal(y, y_scaled)


@pytest.mark.parametrize("name", STATIC)
def test_state_dict_round_trip_is_strict_and_exact(name):
    a, b = _tiny(name, seed=1), _tiny(name, seed=2)
    x = torch.randn(1, 3, 19, 21)
    b.load_state_dict(a.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", ["edsr-baseline", "rcan"])
def test_mean_shift_is_in_state_dict_but_not_applied(name):
    model = _tiny(name)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
        for layer in (model.sub_mean, model.add_mean):
            assert not any(p.requires_grad for p in layer.parameters())
            layer.weight.mul_(3.0)
            layer.bias.add_(1.0)
        after = model(x)
    assert torch.equal(before, after)


def test_mean_shift_values():
    model = _tiny("edsr-baseline")
    mean = torch.tensor([0.4488, 0.4371, 0.4040])
    assert torch.equal(model.sub_mean.weight.view(3, 3), torch.eye(3))
    assert torch.allclose(model.sub_mean.bias, -mean)
    assert torch.allclose(model.add_mean.bias, mean)


@pytest.mark.parametrize("name", STATIC)
def test_gradients_reach_every_trainable_parameter(name):
    model = _tiny(name).train()
    x = torch.randn(2, 3, 16, 24)
    model(x).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", STATIC)
def test_runs_under_cpu_autocast(name):
    model = _tiny(name)
    x = torch.randn(1, 3, 20, 27)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x)
    assert y.shape == ref.shape
    assert torch.allclose(y.float(), ref, atol=0.1 * ref.abs().max().item() + 0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", STATIC)
def test_cuda_matches_cpu(name):
    model = _tiny(name)
    x = torch.randn(2, 3, 21, 30)
    with torch.no_grad():
        ref = model(x)
        model = model.cuda()
        y = model(x.cuda()).cpu()
        with torch.autocast("cuda", dtype=torch.float16):
            y16 = model(x.cuda()).float().cpu()
    assert torch.allclose(y, ref, atol=1e-3)
    assert torch.allclose(y16, ref, atol=0.05 * ref.abs().max().item() + 0.02)


# --------------------------------------------------------------------------- SwinIR


def _sharpen(model):
    """Scale attention weights so softmaxes are peaked and the masks matter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0.0, 2.0)
            elif name.endswith("attn.qkv.weight"):
                p.mul_(20.0)
    return model


def test_swinir_pads_reflect_bottom_right_and_crops_back():
    model = _sharpen(_tiny("swinir"))
    x = torch.randn(1, 3, 37, 53)
    padded = F.pad(x, (0, 3, 0, 3), mode="reflect")  # 40 x 56, multiples of 8
    with torch.no_grad():
        y = model(x)
        y_padded = model(padded)
    assert y_padded.shape == (1, 64, 40, 56)
    assert torch.allclose(y, y_padded[..., :37, :53], atol=1e-5)
    # an input that already is a multiple of 8 gets no padding at all
    x48 = torch.randn(1, 3, 16, 24)
    with torch.no_grad():
        y48 = model(x48)
        y48_padded = model(F.pad(x48, (0, 8, 0, 8), mode="reflect"))
    assert not torch.allclose(y48, y48_padded[..., :16, :24], atol=1e-3)


@pytest.mark.parametrize("size", [(5, 3), (1, 9), (8, 8)])
def test_swinir_accepts_inputs_smaller_than_a_window(size):
    model = _tiny("swinir")
    with torch.no_grad():
        y = model(torch.randn(1, 3, *size))
    assert y.shape == (1, 64, *size) and torch.isfinite(y).all()


@pytest.mark.parametrize("shape", [(1, 3, 48, 48), (2, 3, 48, 48), (2, 3, 21, 35), (1, 3, 24, 16)])
def test_swinir_sdpa_equals_explicit_attention(shape):
    # 48 x 48 (the training size) uses the stored masks, other sizes fresh ones;
    # batch 2 exercises the per-image grouping of windows.
    model = _sharpen(_tiny("swinir"))
    x = torch.randn(*shape)
    with torch.no_grad():
        model.set_fused_attn(True)
        fused = model(x)
        model.set_fused_attn(False)
        explicit = model(x)
    assert torch.allclose(fused, explicit, atol=1e-5, rtol=1e-5)
    # the images of a batch do not mix
    with torch.no_grad():
        single = model(x[-1:])
    assert torch.allclose(single, explicit[-1:], atol=1e-5, rtol=1e-5)


def test_shifted_window_mask_hand_computed():
    from extractors.swinir import shifted_window_mask

    # 4 x 4 map, window 2, shift 1: region labels per axis are [0, 0, 1, 2].
    m = shifted_window_mask(4, 4, 2, 1)
    assert m.shape == (4, 4, 4)
    assert torch.equal(m[0], torch.zeros(4, 4))  # top-left window: one region
    # top-right window, pixels (0,2) (0,3) (1,2) (1,3): column regions 1, 2, 1, 2
    same = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    assert torch.equal(m[1], torch.where(same, 0.0, -100.0))
    # bottom-left window, pixels (2,0) (2,1) (3,0) (3,1): row regions 1, 1, 2, 2
    same = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(m[2], torch.where(same, 0.0, -100.0))
    # bottom-right window: four different regions, each pixel only sees itself
    assert torch.equal(m[3], torch.where(torch.eye(4, dtype=torch.bool), 0.0, -100.0))


def test_swinir_stored_masks_equal_computed_ones():
    from extractors.blocks import relative_position_index
    from extractors.swinir import shifted_window_mask

    model = _tiny("swinir")
    block = model.layers[0].residual_group.blocks[1]
    assert block.attn_mask is not None and model.layers[0].residual_group.blocks[0].attn_mask is None
    assert torch.equal(block.attn_mask, shifted_window_mask(48, 48, 8, 4))
    # 6 x 6 windows of 64 pixels: 10 edge windows split 32/32 (2 * 32 * 32 masked
    # pairs each) and the corner window split 4 x 16 (64^2 - 4 * 16^2 masked pairs)
    assert int((block.attn_mask == -100.0).sum()) == 10 * 2048 + 3072
    assert int((block.attn_mask != 0).sum()) == 10 * 2048 + 3072
    assert not block.attn_mask.view(6, 6, 64, 64)[:5, :5].any()  # interior windows: no mask
    idx = block.attn.relative_position_index
    assert idx.dtype == torch.int64 and idx.shape == (64, 64)
    assert int(idx.min()) == 0 and int(idx.max()) == 224 and int(idx[0, 0]) == 112  # centre = zero offset
    assert torch.equal(idx, relative_position_index(8)[0]) and relative_position_index(8)[1] == 225
    # query (0,0) vs key (7,7): offset (-7,-7) -> table row 0
    assert int(idx[0, 63]) == 0 and int(idx[63, 0]) == 224


def test_swinir_activation_checkpointing_gives_same_gradients():
    x = torch.randn(1, 3, 16, 16)
    grads = []
    for ckpt in (False, True):
        model = _tiny("swinir", use_checkpoint=ckpt)  # eval: no drop path, deterministic
        model(x).sum().backward()
        grads.append(model.layers[0].residual_group.blocks[1].attn.relative_position_bias_table.grad)
    assert grads[0] is not None and torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("family", ["extractors", "upsamplers"])
def test_a_missing_model_module_is_an_import_error_not_a_vanished_model(family, monkeypatch, tmp_path):
    # A renamed or deleted model file must fail loudly, not drop the model from
    # the registry (and from every test parametrised over the registry).
    import importlib

    pkg = importlib.import_module(family)
    names = pkg.extractor_names if family == "extractors" else pkg.upsampler_names
    before = names()
    assert len(before) >= 3
    monkeypatch.setattr(pkg, "MODULES", pkg.MODULES + (f"{family}.renamed_away",))
    with pytest.raises(ModuleNotFoundError) as info:
        names()
    assert info.value.name == f"{family}.renamed_away"
    # a model module that exists but imports a missing module fails the same way
    (tmp_path / "probe_model_module.py").write_text("import no_such_dependency_of_a_model\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(pkg, "MODULES", pkg.MODULES[:-1] + ("probe_model_module",))
    with pytest.raises(ModuleNotFoundError) as info:
        names()
    assert info.value.name == "no_such_dependency_of_a_model"
    monkeypatch.undo()
    assert names() == before


@pytest.mark.parametrize("name", STATIC)
def test_accepts_released_encoder_args(name):
    # released LIIF/LTE checkpoints store encoder_spec.args = {"no_upsampling": True}
    with torch.device("meta"):
        model = create_extractor(name, no_upsampling=True)
        assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
        with pytest.raises(ValueError, match="no_upsampling"):
            create_extractor(name, no_upsampling=False)


def test_rdn_inference_fuses_block_by_block_like_the_concatenation():
    # Without autograd the global fusion runs block by block (no D*G0-channel buffer);
    # with autograd the reference's concatenated form. Same function.
    torch.manual_seed(21)
    model = create_extractor("rdn", G0=8, D=3, C=2, G=4).eval()
    x = torch.randn(2, 3, 11, 13)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
        fused = model(x)
    concatenated = model(x)  # autograd on: torch.cat + GFF, as in LIIF's rdn.py
    assert concatenated.requires_grad and concatenated.abs().mean() > 0.5
    scale = concatenated.abs().max().item()  # float32 sums in another order: relative 1e-6
    assert (fused - concatenated.detach()).abs().max().item() <= 1e-5 * scale


def test_shared_window_blocks_by_hand():
    from extractors.blocks import Mlp, relative_position_index, window_grid, window_partition, window_reverse

    x = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).view(2, 4, 6, 3)   # (B, H, W, C)
    win = window_partition(x, 2)
    assert win.shape == (2 * 2 * 3, 4, 3)
    # image 0, window row 0, window column 1: pixels (0,2) (0,3) (1,2) (1,3)
    assert torch.equal(win[1], torch.stack([x[0, 0, 2], x[0, 0, 3], x[0, 1, 2], x[0, 1, 3]]))
    assert torch.equal(win[6], x[1, :2, :2].reshape(4, 3))                    # image 1 starts at window 6
    assert torch.equal(window_reverse(win, 2, 4, 6), x)
    sliced = x[..., 1:2]                                                      # a strided channel slice
    assert torch.equal(window_reverse(window_partition(sliced, 2), 2, 4, 6), sliced)
    branch = torch.randn(2, 2, 2, 12)[..., 3:6]                               # one window, a channel slice
    one = window_partition(branch, 2)
    assert one.shape == (2, 4, 3) and one.data_ptr() == branch.data_ptr()    # a view, no copy
    assert torch.equal(one, branch.reshape(2, 4, 3))
    # window_grid keeps trailing dims (heads, head_dim) and can be copied into a buffer view
    heads = win.view(12, 4, 3, 1)
    buf = torch.empty(2, 4, 6, 3, 1)
    buf.view(2, 2, 2, 3, 2, 3, 1).copy_(window_grid(heads, 2, 4, 6))
    assert torch.equal(buf[..., 0], x)

    index, rows = relative_position_index(2)                                  # Swin: (2m - 1)^2 rows
    assert rows == 9 and index.dtype == torch.int64
    assert index.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    index, rows = relative_position_index(4, 2)                               # keys: 2x2 cells of 2 pixels
    assert rows == 36 and index.shape == (16, 4)
    # query (0,0) to cell (0,0): offset 0 -> (0 + 2) * 6 + (0 + 2); to cell (1,1), offset -2 -> row 0
    assert int(index[0, 0]) == 14 and int(index[0, 3]) == 0 and int(index[15, 0]) == 35
    with pytest.raises(ValueError, match="does not divide"):
        relative_position_index(4, 3)

    mlp = Mlp(8, 16)
    assert list(mlp.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert isinstance(mlp.drop, torch.nn.Identity) and isinstance(Mlp(8, 16, drop=0.1).drop, torch.nn.Dropout)

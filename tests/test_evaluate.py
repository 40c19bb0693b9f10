"""Evaluation: super_resolve by the protocol, chunking, tiling, window padding, and the
``evaluate`` / ``upscale`` verbs end to end (tiny widths, tiny images)."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from harness import protocol
from harness.bicubic import imresize
from harness.checkpoint import save_checkpoint
from harness.cli import main
from harness.data import eval_pairs
from harness.evaluate import EVAL_COLUMNS, output_size, super_resolve, super_resolve_routed
from harness.tiling import conv_receptive_radius, default_tile_overlap, extract_features
from harness.metrics import psnr
from upsamplers import create_model
from upsamplers.coords import make_cell, make_coord

TINY = {
    "edsr-baseline": {"n_resblocks": 2, "n_feats": 8},
    "rdn": {"G0": 8, "D": 2, "C": 2, "G": 4},
    "swinir": {"embed_dim": 12, "depths": (2, 2), "num_heads": (2, 2), "window_size": 8},
    "tadt": {"embed_dim": 16, "num_groups": 2, "windows": (2, 4, 8), "global_window": 16,
             "pooled_size": 4, "heads": 1, "tarc_width": 4},
}
UP_ARGS = {"hidden_list": [16, 16]}


def tiny(extractor: str, upsampler: str = "liif", seed: int = 0):
    torch.manual_seed(seed)
    return create_model(upsampler, extractor, extractor_args=TINY[extractor], upsampler_args=UP_ARGS).eval()


def rand_lr(h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def reference(model, inp, hr_shape, scale):
    """The contract spelled out: make_coord / make_cell / eval_cell, one predict call."""
    coord = make_coord(hr_shape).unsqueeze(0)
    cell = protocol.eval_cell(make_cell(hr_shape, coord.shape[1]).unsqueeze(0), scale)
    out = model.predict(inp, coord, cell, scale, chunk=10 ** 9)
    return protocol.denormalize(out[0].t().reshape(3, *hr_shape)).clamp(0, 1)


# ----------------------------------------------------------------------------- sizes

def test_output_size_rounds_half_up():
    assert output_size(10, 15, 3.7) == (37, 56)        # 37.0, 55.5 -> 56
    assert output_size(5, 5, 3.7) == (19, 19)          # 18.5 (18.500000000000004 in floats)
    assert output_size(17, 23, 3.7) == (63, 85)        # 62.9, 85.1
    assert output_size(45, 68, 30) == (1350, 2040)
    with pytest.raises(ValueError):
        output_size(4, 4, 0)


def test_super_resolve_odd_sizes_and_fractional_scale():
    model = tiny("edsr-baseline")
    lr = rand_lr(17, 23)
    sr = super_resolve(model, lr, 3.7)
    assert sr.shape == (3, 63, 85)
    assert sr.dtype == torch.float32 and float(sr.min()) >= 0 and float(sr.max()) <= 1
    # clamped, not rounded: values off the 8-bit grid exist
    assert bool(((sr * 255 - (sr * 255).round()).abs() > 1e-3).any())
    sr2 = super_resolve(model, lr, 3.7, out_shape=(40, 71))      # any non-square output
    assert sr2.shape == (3, 40, 71)


@pytest.mark.parametrize("scale", [3.0, 6.0])
def test_super_resolve_is_the_protocol_and_chunks_do_not_matter(scale):
    model = tiny("edsr-baseline")
    lr = rand_lr(13, 19)
    hr_shape = output_size(13, 19, scale)
    one = super_resolve(model, lr, scale, chunk=10 ** 9)
    many = super_resolve(model, lr, scale, chunk=97)            # chunks cut rows mid-way
    assert torch.equal(one, many)
    ref = reference(model, protocol.normalize(lr).unsqueeze(0), hr_shape, scale)
    assert torch.allclose(one, ref, atol=1e-6)
    if scale > 4:   # the cell rule above x4 is applied: the raw cell gives another image
        coord = make_coord(hr_shape).unsqueeze(0)
        raw = model.predict(protocol.normalize(lr)[None], coord, make_cell(hr_shape, coord.shape[1])[None], scale)
        raw = protocol.denormalize(raw[0].t().reshape(3, *hr_shape)).clamp(0, 1)
        assert (raw - one).abs().max() > 1e-4


# ----------------------------------------------------------------------------- tiling

@pytest.mark.parametrize("extractor", ["edsr-baseline", "rdn"])
def test_tiled_features_match_untiled_with_the_default_overlap(extractor):
    model = tiny(extractor)
    radius, local = conv_receptive_radius(model.encoder)
    expected = {"edsr-baseline": 1 + 2 * 2 + 1, "rdn": 2 + 2 * 2 + 1}[extractor]
    assert (radius, local) == (expected, True)
    assert default_tile_overlap(model.encoder) == radius
    inp = protocol.normalize(rand_lr(45, 38)).unsqueeze(0)
    full = extract_features(model, inp, 2.0)
    tiled = extract_features(model, inp, 2.0, tile=10)          # default overlap
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max() < 1e-5
    # the overlap is tight: two pixels less and the tile borders show
    short = extract_features(model, inp, 2.0, tile=10, tile_overlap=radius - 2)
    assert (short - full).abs().max() > 1e-5
    # and the whole pipeline agrees
    lr = rand_lr(45, 38)
    assert (super_resolve(model, lr, 2.5, tile=10) - super_resolve(model, lr, 2.5)).abs().max() < 1e-5


def test_paper_width_overlaps_follow_the_receptive_fields():
    from extractors import create_extractor

    assert conv_receptive_radius(create_extractor("edsr-baseline")) == (34, True)
    assert conv_receptive_radius(create_extractor("rdn")) == (131, True)
    rcan = create_extractor("rcan")
    assert conv_receptive_radius(rcan) == (412, False)          # channel attention pools globally
    assert default_tile_overlap(rcan) == 64
    assert default_tile_overlap(tiny("swinir").encoder) == 64   # multiple of the window (8)
    assert default_tile_overlap(tiny("tadt").encoder) == 64     # multiple of the window (16)


def test_tadt_routes_once_on_the_whole_image_and_tiles_follow_it():
    model = tiny("tadt")
    lr = rand_lr(40, 52)
    seen = []
    hook = model.encoder.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs.get("routing")), with_kwargs=True)
    try:
        sr_t, info = super_resolve_routed(model, lr, 3.0, tile=16)
    finally:
        hook.remove()
    inp, _ = protocol.pad_symmetric_past_multiple(protocol.normalize(lr)[None], 16)
    whole = model.encoder.routing_for(inp, 3.0)
    assert torch.equal(info.r, whole.r) and info.beta is not None
    assert len(seen) > 1 and all(r is not None and torch.equal(r, whole.r) for r in seen)
    sr, info_untiled = super_resolve_routed(model, lr, 3.0)
    assert torch.equal(info_untiled.r, whole.r)
    assert (sr_t - sr).abs().max() < 1e-5
    # extract_features without a routing decides it on the whole input, not per tile
    seen.clear()
    hook = model.encoder.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs.get("routing")), with_kwargs=True)
    try:
        extract_features(model, inp, 3.0, tile=16)
    finally:
        hook.remove()
    assert len(seen) > 1 and all(r is not None and torch.equal(r, whole.r) for r in seen)


# ----------------------------------------------------------------------- window padding

@pytest.mark.parametrize("extractor", ["swinir", "tadt"])
def test_window_models_are_mirror_padded_and_cropped_back(extractor):
    model = tiny(extractor)
    ws = model.encoder.window_size
    lr = rand_lr(37, 53)
    sr = super_resolve(model, lr, 2.0)
    # by hand, LTE's way: pad the LR, predict the padded image's x2 grid, crop
    padded, _ = protocol.pad_symmetric_past_multiple(protocol.normalize(lr)[None], ws)
    hp, wp = padded.shape[-2:]
    assert (hp - 37, wp - 53) == (protocol.window_pad_amount(37, ws), protocol.window_pad_amount(53, ws))
    manual = protocol.crop_to(reference(model, padded, (2 * hp, 2 * wp), 2.0), (74, 106))
    assert sr.shape == manual.shape == (3, 74, 106)
    assert (sr - manual).abs().max() < 1e-5
    # without the padding the result differs
    unpadded = reference(model, protocol.normalize(lr)[None], (74, 106), 2.0)
    assert (sr - unpadded).abs().max() > 1e-4


# --------------------------------------------------------------------------------- verbs

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A two-image data root in the folder layout, a config, and two tiny checkpoints."""
    root = tmp_path_factory.mktemp("eval")
    import skimage.data

    photo = skimage.data.chelsea()[100:172, 150:246]           # 72 x 96 RGB
    grey = skimage.data.camera()[200:264, 200:280]             # 64 x 80 grey
    for folder, name, img in (("DIV2K_valid_HR", "0801", photo), ("DIV2K_valid_HR", "0802", photo[::-1]),
                              ("benchmark/B100/HR", "3096", grey)):
        path = root / "data" / folder / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(img)).save(path)
    cfg = root / "cfg.yaml"
    cfg.write_text(f"data: {{source: folders, root: {root / 'data'}, cache: {root / 'cache'}}}\n"
                   "device: cpu\nevaluation: {max_images: 1, chunk: 5000}\n")
    ckpts = {}
    for ext in ("edsr-baseline", "tadt"):
        spec = {"upsampler": "liif", "extractor": ext, "extractor_args": TINY[ext], "upsampler_args": UP_ARGS}
        ckpts[ext] = save_checkpoint(root / f"{ext}.pth", tiny(ext), spec, step=0,
                                     run={"name": f"{ext}-liif-test"})
    return {"root": root, "cfg": cfg, "ckpt": ckpts, "data": {"source": "folders", "root": str(root / "data"),
                                                              "cache": str(root / "cache")}}


def read_csv(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_evaluate_verb_writes_per_image_rows(workspace, capsys):
    out = workspace["root"] / "out" / "tadt.csv"
    rc = main(["evaluate", "--config", str(workspace["cfg"]), "--checkpoint", str(workspace["ckpt"]["tadt"]),
               "--dataset", "div2k-valid", "--scales", "2,6", "--out", str(out), "--threads", "1"])
    assert rc == 0
    cols, rows = read_csv(out)
    assert tuple(cols) == EVAL_COLUMNS
    assert [(r["scale"], r["image"]) for r in rows] == [("2", "0801"), ("6", "0801")]   # max_images 1
    for r in rows:
        assert r["run"] == "tadt-liif-test" and r["dataset"] == "div2k-valid"
        assert math.isfinite(float(r["psnr"])) and float(r["psnr"]) > 5
        assert 0 <= int(r["active_branches"]) <= 8 and 0 < float(r["beta"]) < 1
        assert len(r["routing"]) == 8 and r["routing"].count("1") == int(r["active_branches"])
    err = capsys.readouterr().err
    assert "x2:" in err and "x6:" in err and "mean PSNR" in err

    out2 = workspace["root"] / "out" / "edsr.csv"
    assert main(["evaluate", "--config", str(workspace["cfg"]), "--checkpoint", str(workspace["ckpt"]["edsr-baseline"]),
                 "--dataset", "b100", "--scales", "3", "--max-images", "0", "--out", str(out2)]) == 0
    _, rows = read_csv(out2)
    assert len(rows) == 1 and rows[0]["active_branches"] == rows[0]["beta"] == rows[0]["routing"] == ""
    # the PSNR is the protocol's: Y, shave s, of super_resolve's output
    name, lr, hr = next(eval_pairs(workspace["data"], "b100", 3))
    model = tiny("edsr-baseline")
    expect = psnr(super_resolve(model, lr, 3, out_shape=hr.shape[-2:]), hr, 3, y_channel=True)
    assert float(rows[0]["psnr"]) == pytest.approx(expect, abs=1e-9)


def test_bicubic_row_equals_hand_computed_psnr(workspace):
    out = workspace["root"] / "out" / "bicubic.csv"
    assert main(["evaluate", "--config", str(workspace["cfg"]), "--bicubic", "--dataset", "div2k-valid",
                 "--scales", "2.5", "--out", str(out), "--max-images", "2"]) == 0
    _, rows = read_csv(out)
    assert [r["image"] for r in rows] == ["0801", "0802"] and rows[0]["run"] == "bicubic"
    name, lr, hr = next(eval_pairs(workspace["data"], "div2k-valid", 2.5))
    by_hand = psnr(imresize(lr, output_shape=hr.shape[-2:]).clamp(0, 1), hr, 2.5, y_channel=False)
    assert float(rows[0]["psnr"]) == pytest.approx(by_hand, abs=1e-9)


def test_evaluate_errors_leave_no_csv(workspace, capsys):
    out = workspace["root"] / "out" / "bad.csv"
    assert main(["evaluate", "--config", str(workspace["cfg"]), "--bicubic", "--dataset", "div2k",
                 "--scales", "2", "--out", str(out)]) == 2
    assert main(["evaluate", "--config", str(workspace["cfg"]), "--bicubic", "--dataset", "set5",
                 "--scales", "2", "--out", str(out)]) == 2       # not in the data root
    assert main(["evaluate", "--config", str(workspace["cfg"]), "--bicubic", "--dataset", "b100",
                 "--scales", "0.5", "--out", str(out)]) == 2
    assert not out.exists()
    assert capsys.readouterr().err.count("error:") == 3


def test_upscale_writes_rounded_size_and_rejects_bad_input(workspace, capsys):
    root = workspace["root"]
    src = root / "user.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 15, 4), dtype=np.uint8), "RGBA").save(src)
    out = root / "up" / "user_x3.7.png"
    assert main(["upscale", str(src), "--scale", "3.7", "--checkpoint", str(workspace["ckpt"]["edsr-baseline"]),
                 "-o", str(out)]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (56, 37)   # (w, h), 55.5 -> 56
    sized = root / "up" / "sized.png"
    assert main(["upscale", str(src), "--size", "21x40", "--checkpoint", str(workspace["ckpt"]["tadt"]),
                 "-o", str(sized)]) == 0
    with Image.open(sized) as im:
        assert im.size == (40, 21)

    bad = root / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    for argv in (["upscale", str(bad), "--scale", "2"], ["upscale", str(src), "--scale", "0"],
                 ["upscale", str(src), "--scale", "-1.5"]):
        target = root / "up" / "never.png"
        capsys.readouterr()
        assert main(argv + ["--checkpoint", str(workspace["ckpt"]["edsr-baseline"]), "-o", str(target)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:")
        assert not target.exists()
    assert not [p for p in (root / "up").iterdir() if p.name.startswith(".")]   # no temp files left


def test_configured_tiling_uses_each_extractors_own_overlap_unless_set():
    # A config that only turns tiling on must not impose one overlap on every
    # extractor: null means default_tile_overlap (exact for the conv extractors).
    from harness.config import load_config

    assert load_config({"evaluation": {"tile": 64}})["evaluation"]["tile_overlap"] is None
    assert load_config("config/paper.yaml")["evaluation"]["tile_overlap"] is None
    assert load_config({"evaluation": {"tile_overlap": 8}})["evaluation"]["tile_overlap"] == 8

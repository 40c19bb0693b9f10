"""Issue 12, inputs and outputs: LR files of the wrong size, bounded and checked
``upscale``, unwritable output paths, tiny images, file modes, non-finite outputs and
32-bit images. Each failure is one ``error:`` line on stderr, exit 2, no traceback, no
output file, and an earlier output left as it was."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import upscaling
from harness.checkpoint import save_checkpoint
from harness.cli import main
from harness.data import read_image, write_png
from harness.data.images import write_png_rows
from harness.evaluate import super_resolve
from harness.io import atomic_path, atomic_write_text, check_writable
from upsamplers import create_model

EDSR = {"n_resblocks": 1, "n_feats": 8}
UP = {"liif": {"hidden_list": [16]}, "lte": {"hidden_dim": 16, "hidden_list": [16]}, "metasr": {"hidden_list": [16]}}


def tiny(upsampler="liif", seed=0):
    torch.manual_seed(seed)
    return create_model(upsampler, "edsr-baseline", extractor_args=EDSR, upsampler_args=UP[upsampler]).eval()


def save_tiny(path, model=None, upsampler="liif"):
    spec = {"upsampler": upsampler, "extractor": "edsr-baseline", "extractor_args": EDSR,
            "upsampler_args": UP[upsampler]}
    return save_checkpoint(path, model if model is not None else tiny(upsampler), spec, step=0)


def png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)
    return path


def rand_img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def one_error(capsys, *needles) -> str:
    """The command's stderr is exactly one ``error:`` line holding every needle."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    assert "Traceback" not in err[0]
    return err[0]


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.suffix == ".tmp" or p.name.startswith(".write-check")]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "edsr-liif.pth")


def div2k_root(tmp_path, hr, lr=None, name="0801"):
    """A data root with one DIV2K-valid HR image (and its X2 LR file, if given), and a config."""
    root = tmp_path / "data"
    png(root / "DIV2K_valid_HR" / f"{name}.png", hr)
    if lr is not None:
        png(root / "DIV2K_valid_LR_bicubic" / "X2" / f"{name}x2.png", lr)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {{source: folders, root: {root}, cache: {tmp_path / 'cache'}}}\ndevice: cpu\n")
    return root, cfg


# ------------------------------------------------------------- item 2: LR file sizes

@pytest.mark.parametrize("lr_shape", [(20, 24), (33, 37)])   # too small; the ceiling of 65x73 / 2
def test_lr_file_of_the_wrong_size_is_an_error_naming_it(tmp_path, capsys, lr_shape):
    root, cfg = div2k_root(tmp_path, rand_img(65, 73), rand_img(*lr_shape))
    assert main(["prepare-data", "--config", str(cfg), "--datasets", "div2k-valid", "--scales", "2"]) == 2
    one_error(capsys, "0801x2.png", f"{lr_shape[0]}x{lr_shape[1]}", "must be 32x36", "floor")
    out = tmp_path / "eval.csv"
    out.write_text("an earlier result\n")
    assert main(["evaluate", "--config", str(cfg), "--bicubic", "--dataset", "div2k-valid",
                 "--scales", "2", "--out", str(out)]) == 2
    one_error(capsys, "0801x2.png", "must be 32x36")
    assert out.read_text() == "an earlier result\n" and no_temp_files(tmp_path)


def test_lr_file_of_the_floor_size_is_accepted(tmp_path, capsys):
    root, cfg = div2k_root(tmp_path, rand_img(65, 73), rand_img(32, 36))
    assert main(["prepare-data", "--config", str(cfg), "--datasets", "div2k-valid", "--scales", "2"]) == 0
    assert "1 precomputed" in capsys.readouterr().out
    out = tmp_path / "eval.csv"
    assert main(["evaluate", "--config", str(cfg), "--bicubic", "--dataset", "div2k-valid",
                 "--scales", "2", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2


# ------------------------------------------------------------- item 8: tiny images

def test_image_too_small_for_the_shave_stops_with_its_name(tmp_path, capsys):
    root, cfg = div2k_root(tmp_path, rand_img(3, 3), name="0900")
    png(root / "DIV2K_valid_HR" / "0801.png", rand_img(40, 40))
    out = tmp_path / "eval.csv"
    assert main(["evaluate", "--config", str(cfg), "--bicubic", "--dataset", "div2k-valid",
                 "--scales", "3,2", "--out", str(out)]) == 2
    one_error(capsys, "0900.png", "3x3", "x3", "shave of 9")   # the first scale, before any work
    assert not out.exists() and no_temp_files(tmp_path)
    assert main(["prepare-data", "--config", str(cfg), "--datasets", "div2k-valid", "--scales", "2"]) == 2
    one_error(capsys, "0900.png", "shave of 8")
    # --max-images 1 keeps only 0801, which is large enough
    assert main(["evaluate", "--config", str(cfg), "--bicubic", "--dataset", "div2k-valid",
                 "--scales", "2", "--max-images", "1", "--out", str(out)]) == 0
    assert [r.split(",")[3] for r in out.read_text().splitlines()[1:]] == ["0801"]


# ------------------------------------------------------------- item 3: bounded upscale

@pytest.mark.parametrize("upsampler", ["liif", "lte", "metasr"])
def test_bands_and_band_features_give_the_whole_image(upsampler):
    model = tiny(upsampler)
    lr = torch.rand(3, 45, 37, generator=torch.Generator().manual_seed(1))
    for scale, shape, tile in ((2.5, None, 0), (3.0, (140, 101), 8), (0.6, None, 8), (7.3, None, 16)):
        whole = super_resolve(model, lr, scale, out_shape=shape, chunk=500, tile=tile)
        parts = list(upscaling.super_resolve_bands(model, lr, scale, out_shape=shape, chunk=333,
                                                   tile=tile, band_rows=5))
        bounds = [(y0, y1) for y0, y1, _ in parts]           # contiguous, top to bottom, <= 5 rows
        assert bounds[0][0] == 0 and bounds[-1][1] == whole.shape[1]
        assert all(b[1] == c[0] for b, c in zip(bounds, bounds[1:])) and all(0 < y1 - y0 <= 5 for y0, y1 in bounds)
        if tile == 0:
            assert [y0 for y0, _ in bounds] == list(range(0, whole.shape[1], 5))
        banded = torch.cat([p[2] for p in parts], dim=1)
        assert banded.shape == whole.shape
        # tile 0: the same features (only the decoder's batches differ); tiles: EDSR's overlap is
        # exact up to float summation order
        assert (banded - whole).abs().max() < (1e-6 if tile == 0 else 2e-5)


def test_band_features_need_the_decoder_margin(monkeypatch):
    model = tiny("metasr")
    lr = torch.rand(3, 45, 37, generator=torch.Generator().manual_seed(1))
    whole = super_resolve(model, lr, 2.5, tile=8)
    monkeypatch.setattr(upscaling, "DECODER_MARGIN", 0)
    banded = torch.cat([p[2] for p in upscaling.super_resolve_bands(model, lr, 2.5, tile=8)], dim=1)
    assert (banded - whole).abs().max() > 1e-2


def test_png_rows_writer_round_trips_band_by_band(tmp_path):
    img = rand_img(53, 41, 3)
    img[10:30] = img[10:11]                              # flat rows: every filter type gets used
    write_png_rows(tmp_path / "a.png", 53, 41, (img[i:i + 7] for i in range(0, 53, 7)))
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), img)
    with pytest.raises(ValueError, match="given 49"):
        write_png_rows(tmp_path / "b.png", 53, 41, [img[:49]])
    assert not (tmp_path / "b.png").exists() and no_temp_files(tmp_path)


def test_estimate_follows_measured_costs_and_tiles_bound_it():
    model = tiny()
    spec = {"upsampler": "liif", "extractor": "edsr-baseline", "extractor_args": EDSR, "upsampler_args": UP["liif"]}
    costs = upscaling.probe_costs(model, 4.0, spec)
    # EDSR (1 block, 8 channels) at its peak holds 3 maps of 8 floats: the head's output (kept for
    # the skips), the block's first conv (its ReLU is in place) and its second conv, plus that
    # conv's scratch (8 channels rounded up to 32)
    scratch = upscaling.CONV_SCRATCH * 4 * 32
    assert costs.feat_px == 8 * 4 and costs.encoder_px == pytest.approx(3 * 8 * 4 + scratch)
    # inference prepare keeps the encoder's map: LIIF's first layer (16 channels) is computed
    # per band of rows while decoding (upsamplers.bands), so it is part of the query cost
    assert costs.prepared_px == costs.feat_px and costs.prepare_px == 0
    assert costs.query > 16 * 4 * upscaling.PROBE_SIDE ** 2 / upscaling.PROBE_QUERIES
    small = upscaling.estimate(costs, model, 1000, 1000, 4000, 4000)
    big = upscaling.estimate(costs, model, 4000, 4000, 16000, 16000)
    tiled = upscaling.estimate(costs, model, 4000, 4000, 16000, 16000, tile=256)
    assert big["features"] == pytest.approx(16 * small["features"], rel=0.01)
    # decode: the chunk's work, which tiles do not change, is a larger share since inference
    # prepare keeps only the encoder's map (upsamplers.bands)
    assert tiled["features"] < big["features"] / 10 and tiled["decode"] < big["decode"] / 5
    assert upscaling.estimate(costs, model, 4000, 4000, 120000, 120000, tile=256)["host"] < 2 ** 30


@pytest.fixture(scope="module")
def paper_ckpt(tmp_path_factory):
    """A paper-width EDSR-baseline-LIIF checkpoint and a 4000 x 4000 image (read only by header)."""
    root = tmp_path_factory.mktemp("paper")
    spec = {"upsampler": "liif", "extractor": "edsr-baseline", "extractor_args": {}, "upsampler_args": {}}
    ckpt = save_checkpoint(root / "paper.pth", create_model("liif", "edsr-baseline"), spec, step=0)
    img = png(root / "big.png", np.zeros((4000, 4000, 3), np.uint8))
    return ckpt, img


def test_upscale_refuses_what_cannot_fit_and_names_a_tile(paper_ckpt, tmp_path, capsys, monkeypatch):
    ckpt, img = paper_ckpt
    monkeypatch.setattr(upscaling, "available_memory", lambda device="cpu": 8 << 30)
    out = tmp_path / "big_x30.png"
    for size in (["--scale", "30"], ["--size", "40000x40000"]):
        assert main(["upscale", str(img), *size, "--checkpoint", str(ckpt), "-o", str(out)]) == 2
        line = one_error(capsys, "4000x4000 to", "estimated", "8.0 GiB available", "use --tile")
        assert ("120000x120000" if size[0] == "--scale" else "40000x40000") in line
        tile = int(line.split("use --tile ")[1].split()[0])
        est = line.split("needs an estimated ")[1].split(" of memory")[0]
        assert float(est.split()[0]) > 8 and est.endswith("GiB")        # untiled: features of 16M px
        assert 32 <= tile <= 2048 and not out.exists()
    # a row of the output alone cannot fit: no tile helps
    small = png(tmp_path / "small.png", rand_img(8, 8))
    assert main(["upscale", str(small), "--size", "10x2000000000", "--checkpoint", str(ckpt), "-o", str(out)]) == 2
    one_error(capsys, "10x2000000000", "no --tile makes it fit")
    assert not out.exists() and no_temp_files(tmp_path)


def test_upscale_with_the_named_tile_runs_and_matches(ckpt, tmp_path, capsys, monkeypatch):
    src = png(tmp_path / "in.png", rand_img(70, 90, 4))
    whole = tmp_path / "whole.png"
    assert main(["upscale", str(src), "--scale", "2.5", "--checkpoint", str(ckpt), "-o", str(whole)]) == 0
    costs = upscaling.probe_costs(tiny(), 2.5, None)
    need = {t: upscaling.estimate(costs, tiny(), 70, 90, 175, 225, t)["total"] - costs.params for t in (0, 32)}
    assert need[32] < need[0]
    avail = int((need[0] + need[32]) / 2 / 0.9)                # fits tiled, not whole
    monkeypatch.setattr(upscaling, "available_memory", lambda device="cpu": avail)
    out = tmp_path / "tiled.png"
    capsys.readouterr()
    assert main(["upscale", str(src), "--scale", "2.5", "--checkpoint", str(ckpt), "-o", str(out)]) == 2
    line = one_error(capsys, "70x90 to 175x225", "use --tile")
    tile = line.split("use --tile ")[1].split()[0]
    assert main(["upscale", str(src), "--scale", "2.5", "--checkpoint", str(ckpt), "-o", str(out),
                 "--tile", tile]) == 0
    a, b = read_image(whole).astype(int), read_image(out).astype(int)
    assert a.shape == b.shape == (175, 225, 3) and np.abs(a - b).max() <= 1


# ------------------------------------------------------------- item 4: unwritable outputs

def test_unwritable_output_paths_stop_before_any_work(ckpt, tmp_path, capsys):
    src = png(tmp_path / "in.png", rand_img(10, 12))
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    a_dir = tmp_path / "a_dir.png"
    a_dir.mkdir()
    for target, needle in ((a_dir, "is a directory"), (a_file / "x.png", "not a folder"),
                           (Path("/proc/x.png"), "not writable")):
        assert main(["upscale", str(src), "--scale", "2", "--checkpoint", str(ckpt), "-o", str(target)]) == 2
        one_error(capsys, "output image", str(target), needle)
    _, cfg = div2k_root(tmp_path, rand_img(40, 40))
    assert main(["evaluate", "--config", str(cfg), "--bicubic", "--dataset", "div2k-valid", "--scales", "2",
                 "--out", str(tmp_path)]) == 2
    one_error(capsys, "--out CSV", "is a directory")
    assert main(["prepare-data", "--config", str(cfg), "--cache", str(a_file)]) == 2
    one_error(capsys, "--cache folder", "a file, not a folder")
    for argv, needle in (
            (["table", "table1", "--out", str(a_dir)], "--out"),
            (["figure", "figure2", "--out", str(a_file / "f.png")], "--out"),
            (["figure", "figure2", "--out", str(tmp_path / "f.png"), "--data", str(a_dir)], "--data"),
            (["report", "--out", str(a_dir)], "--out"),
            (["flops", "--dataset", "div2k-valid", "--extractor", "edsr-baseline", "--out", str(a_dir)], "--out CSV"),
            (["check-regression", "--write-baseline", "--baseline", str(a_dir)], "--baseline")):
        assert main(argv) == 2, argv
        one_error(capsys, needle, "cannot write")
    assert no_temp_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_dir.png", "a_file.txt", "cfg.yaml", "data", "in.png"]
    assert list(a_dir.iterdir()) == [] and a_file.read_text() == "x"


def test_train_checks_out_and_log_before_training(tmp_path, capsys):
    a_dir = tmp_path / "ckpt.pth"
    a_dir.mkdir()
    log = tmp_path / "logs" / "run.csv"
    assert main(["train", "--run", "edsr-baseline-liif", "--out", str(a_dir), "--log", str(log)]) == 2
    one_error(capsys, "--out checkpoint", "is a directory")
    assert main(["train", "--run", "edsr-baseline-liif", "--out", str(tmp_path / "c.pth"),
                 "--log", str(a_dir)]) == 2
    one_error(capsys, "--log", "is a directory")
    assert not log.exists() and not (tmp_path / "c.pth.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth"]


def test_check_writable_accepts_new_folders_and_creates_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "x.png"
    assert check_writable(target, "output") == target
    assert list(tmp_path.iterdir()) == []
    assert check_writable(tmp_path / "cache", "cache", directory=True) == tmp_path / "cache"


def test_atomic_path_errors_are_one_line(tmp_path):
    from harness.errors import HarnessError

    (tmp_path / "f").write_text("x")
    with pytest.raises(HarnessError, match="cannot write .*f/x.csv"):
        atomic_write_text(tmp_path / "f" / "x.csv", "data")


# ------------------------------------------------------------- item 10: file modes

def test_atomic_writes_keep_the_replaced_mode_else_the_umask(tmp_path, ckpt):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "a")
        write_png(tmp_path / "new.png", rand_img(4, 4))
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644
        assert stat.S_IMODE((tmp_path / "new.png").stat().st_mode) == 0o644
        assert stat.S_IMODE(Path(ckpt).stat().st_mode) == 0o644   # written by save_checkpoint
        (tmp_path / "new.txt").chmod(0o640)
        atomic_write_text(tmp_path / "new.txt", "b")
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640
        assert (tmp_path / "new.txt").read_text() == "b"
        os.umask(0o077)
        with atomic_path(tmp_path / "private.csv") as tmp:
            tmp.write_text("c")
        assert stat.S_IMODE((tmp_path / "private.csv").stat().st_mode) == 0o600
        os.umask(0o002)
        src = png(tmp_path / "in.png", rand_img(6, 6))
        assert main(["upscale", str(src), "--scale", "2", "--checkpoint", str(ckpt),
                     "-o", str(tmp_path / "up.png")]) == 0
        assert stat.S_IMODE((tmp_path / "up.png").stat().st_mode) == 0o664
    finally:
        os.umask(old)


# ------------------------------------------------------------- item 11: non-finite, 32-bit

def test_non_finite_model_output_is_an_error_not_an_image(tmp_path, capsys):
    model = tiny()
    with torch.no_grad():
        model.imnet.layers[0].weight[0, 0] = float("nan")
    bad = save_tiny(tmp_path / "nan.pth", model)
    src = png(tmp_path / "in.png", rand_img(10, 12))
    out = tmp_path / "out.png"
    assert main(["upscale", str(src), "--scale", "2", "--checkpoint", str(bad), "-o", str(out)]) == 2
    one_error(capsys, "not finite")
    assert not out.exists() and no_temp_files(tmp_path)
    _, cfg = div2k_root(tmp_path, rand_img(40, 40))
    csv = tmp_path / "eval.csv"
    assert main(["evaluate", "--config", str(cfg), "--checkpoint", str(bad), "--dataset", "div2k-valid",
                 "--scales", "2", "--out", str(csv)]) == 2
    one_error(capsys, "not finite")
    assert not csv.exists()


def test_32_bit_images_are_scaled_in_range_or_refused(tmp_path):
    from harness.errors import HarnessError

    f01 = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(f01).save(tmp_path / "f01.tif")
    assert np.array_equal(read_image(tmp_path / "f01.tif")[..., 0], np.floor(f01 * 255 + 0.5).astype(np.uint8))
    Image.fromarray(f01 * 4 - 1).save(tmp_path / "f_wide.tif")
    with pytest.raises(HarnessError, match=r"f_wide.tif: a 32-bit float image must hold values in \[0, 1\], "
                                           r"this one spans -1 .. 3"):
        read_image(tmp_path / "f_wide.tif")
    i16 = (np.arange(12, dtype=np.int32).reshape(3, 4) * 5000)
    Image.fromarray(i16).save(tmp_path / "i16.tif")
    assert np.array_equal(read_image(tmp_path / "i16.tif")[..., 0], np.floor(i16 / 257 + 0.5).astype(np.uint8))
    Image.fromarray(i16 * 100 - 7).save(tmp_path / "i32.tif")
    with pytest.raises(HarnessError, match=r"i32.tif: a 32-bit integer image must hold 16-bit values"):
        read_image(tmp_path / "i32.tif")

"""Datasets: layouts, the embedded default, evaluation pairs, LR cache, training patches."""
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import data
from harness.bicubic import imresize_uint8, pil_bicubic_resize
from harness.cli import main
from harness.errors import HarnessError


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _rand(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    cfg = {"source": "embedded", "root": "unused", "cache": str(tmp_path_factory.mktemp("cache"))}
    data.build_embedded(cfg["cache"])
    return cfg


@pytest.fixture
def folders(tmp_path):
    """A tiny folder layout: DIV2K valid (one 300x451 image) and B100 (two images)."""
    root = tmp_path / "data"
    _png(root / "DIV2K_valid_HR" / "0801.png", _rand(300, 451, 1))
    _png(root / "benchmark" / "B100" / "HR" / "3096.png", _rand(61, 83, 2))
    _png(root / "benchmark" / "B100" / "HR" / "8023.png", _rand(64, 64, 3))
    return {"source": "folders", "root": str(root), "cache": str(tmp_path / "cache")}


# ---------------------------------------------------------------- image handling
def test_grey_is_stacked_and_alpha_dropped():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = data.as_rgb_uint8(grey)
    assert rgb.shape == (3, 4, 3) and all(np.array_equal(rgb[..., c], grey) for c in range(3))
    rgba = np.dstack([_rand(3, 4), np.full((3, 4), 7, np.uint8)])
    np.testing.assert_array_equal(data.as_rgb_uint8(rgba), rgba[..., :3])
    assert data.as_rgb_uint8(np.eye(2, dtype=bool))[..., 0].tolist() == [[255, 0], [0, 255]]
    assert data.as_rgb_uint8(np.array([[0.0, 1.0]]))[0, :, 0].tolist() == [0, 255]
    with pytest.raises(ValueError):
        data.as_rgb_uint8(np.zeros((2, 2, 5), np.uint8))


def test_read_image_grey_and_rgba_files(tmp_path):
    Image.fromarray(np.full((5, 6), 9, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.dstack([_rand(5, 6), np.zeros((5, 6), np.uint8)])).save(tmp_path / "a.png")
    assert data.read_image(tmp_path / "g.png").shape == (5, 6, 3)
    assert data.read_image(tmp_path / "a.png").shape == (5, 6, 3)


def test_unreadable_image_names_the_file(tmp_path, folders):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really an image")
    with pytest.raises(HarnessError, match="broken.png"):
        data.read_image(bad)
    bad_hr = Path(folders["root"]) / "benchmark" / "B100" / "HR" / "9999.png"
    bad_hr.write_bytes(os.urandom(100))
    with pytest.raises(HarnessError, match="9999.png"):
        list(data.eval_pairs(folders, "b100", 6))


# ------------------------------------------------------------------ configuration
def test_data_cfg_keys_and_dataset_names():
    with pytest.raises(HarnessError, match="unknown data configuration key"):
        data.check_data_cfg({"source": "embedded", "roots": "x"})
    with pytest.raises(HarnessError, match="source"):
        data.check_data_cfg({"source": "web"})
    with pytest.raises(HarnessError, match="unknown dataset"):
        data.hr_files({"source": "embedded"}, "div2k")
    assert [d for d in data.DATASETS if data.is_benchmark(d)] == ["set5", "set14", "b100", "urban100", "manga109"]
    assert not data.is_benchmark("div2k-valid") and not data.is_benchmark("div2k-train")


def test_missing_folder_is_one_error_naming_it(tmp_path):
    cfg = {"source": "folders", "root": str(tmp_path / "data"), "cache": str(tmp_path / "c")}
    with pytest.raises(HarnessError) as exc:
        data.eval_pairs(cfg, "urban100", 2)          # raised at the call, not while iterating
    msg = str(exc.value)
    assert str(Path(cfg["root"]) / "benchmark" / "Urban100" / "HR") in msg and "benchmark.tar" in msg
    (tmp_path / "data" / "DIV2K_valid_HR").mkdir(parents=True)
    with pytest.raises(HarnessError, match="DIV2K_valid_HR.*no images|no images.*DIV2K_valid_HR"):
        data.eval_pairs(cfg, "div2k-valid", 30)
    with pytest.raises(HarnessError) as exc:         # prepare: every missing dataset in ONE error
        data.prepare(cfg, ["b100", "manga109"])
    assert "B100" in str(exc.value) and "Manga109" in str(exc.value)


# ---------------------------------------------------------------- evaluation pairs
def test_on_the_fly_sizes_follow_liif_rule(folders):
    (name, lr, hr), = list(data.eval_pairs(folders, "div2k-valid", 30))
    assert name == "0801"
    assert lr.shape == (3, 10, 15) and hr.shape == (3, 300, 450)  # floor(451/30)=15, round(15*30)=450
    assert lr.dtype == torch.float32 and 0 <= lr.min() and lr.max() <= 1
    raw = _rand(300, 451, 1)
    np.testing.assert_array_equal((hr * 255).round().byte().permute(1, 2, 0).numpy(), raw[:300, :450])
    want = pil_bicubic_resize(raw[:300, :450], (10, 15))
    np.testing.assert_array_equal((lr * 255).round().byte().permute(1, 2, 0).numpy(), want)
    (_, lr, hr), = list(data.eval_pairs(folders, "div2k-valid", 2.5))
    assert lr.shape == (3, 120, 180) and hr.shape == (3, 300, 450)    # floor(451/2.5)=180


def test_matlab_scales_generate_cache_once_atomically(folders):
    pairs = list(data.eval_pairs(folders, "b100", 3))
    assert [p[0] for p in pairs] == ["3096", "8023"]
    name, lr, hr = pairs[0]                    # 61x83 -> modcrop 60x81 -> LR 20x27, HR 60x81
    assert lr.shape == (3, 20, 27) and hr.shape == (3, 60, 81)
    path = data.lr_cache_path(folders, "b100", "3096", 3)
    cached = np.asarray(Image.open(path))
    np.testing.assert_array_equal(cached, imresize_uint8(_rand(61, 83, 2)[:60, :81], scale=1 / 3))
    np.testing.assert_array_equal((lr * 255).round().byte().permute(1, 2, 0).numpy(), cached)
    leftovers = [p for p in path.parent.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
    mtime = path.stat().st_mtime_ns
    os.utime(path, ns=(mtime - 10**9, mtime - 10**9))     # make a rewrite detectable
    again = list(data.eval_pairs(folders, "b100", 3))
    assert path.stat().st_mtime_ns == mtime - 10**9        # not rewritten
    assert torch.equal(again[0][1], lr)


def test_precomputed_lr_is_used_and_must_be_complete(folders):
    root = Path(folders["root"])
    lr_dir = root / "benchmark" / "B100" / "LR_bicubic" / "X2"
    marker = np.full((30, 41, 3), 77, np.uint8)            # not what we would generate
    _png(lr_dir / "3096x2.png", marker)
    with pytest.raises(HarnessError, match=r"X2.*8023x2\.png"):
        data.eval_pairs(folders, "b100", 2)
    _png(lr_dir / "8023x2.png", np.full((32, 32, 3), 5, np.uint8))
    name, lr, hr = next(iter(data.eval_pairs(folders, "b100", 2)))
    assert lr.shape == (3, 30, 41) and hr.shape == (3, 60, 82)
    assert torch.all(lr == 77 / 255)
    assert not data.lr_cache_path(folders, "b100", "3096", 2).exists()


# ------------------------------------------------------------------ embedded sets
def test_embedded_split_matches_the_built_images(embedded):
    rows = data.embedded_split()
    assert {r["dataset"] for r in rows} == set(data.DATASETS)
    for dataset in data.DATASETS:
        loaded = dict(data.load_hr_images(embedded, dataset))
        assert sorted(loaded) == sorted(data.EMBEDDED_SETS[dataset])
        for r in (r for r in rows if r["dataset"] == dataset):
            img = loaded[r["image"]]
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            assert f"{img.shape[0]}x{img.shape[1]}" == r["size"]


def test_embedded_train_and_eval_images_are_distinct(embedded):
    def digests(dataset):
        return {hashlib.sha1(img.tobytes()).hexdigest() for _, img in data.load_hr_images(embedded, dataset)}
    train = digests("div2k-train")
    assert len(train) == len(data.EMBEDDED_SETS["div2k-train"])
    for dataset in ("div2k-valid", "b100", "urban100", "manga109", "set5", "set14"):
        assert not train & digests(dataset)
        assert not set(data.EMBEDDED_SETS["div2k-train"]) & set(data.EMBEDDED_SETS[dataset])
    assert not digests("div2k-valid") & digests("b100")


def test_embedded_eval_pairs_are_rgb_in_range_and_x30_is_large_enough(embedded):
    for dataset in ("div2k-valid", "b100", "urban100", "manga109"):
        for name, lr, hr in data.eval_pairs(embedded, dataset, 30):
            assert lr.shape[0] == hr.shape[0] == 3
            assert min(lr.shape[1:]) >= 10, (dataset, name)
            assert 0 <= float(hr.min()) and float(hr.max()) <= 1
    name, lr, hr = next(iter(data.eval_pairs(embedded, "div2k-valid", 30)))
    assert name == "chelsea" and lr.shape == (3, 10, 15) and hr.shape == (3, 300, 450)


# ----------------------------------------------------------------- training patches
@pytest.fixture
def train_cfg(tmp_path):
    root = tmp_path / "data"
    for i, (h, w) in enumerate([(200, 260), (192, 192), (230, 201)]):
        _png(root / "DIV2K_train_HR" / f"{i:04d}.png", _rand(h, w, 10 + i))
    return {"source": "folders", "root": str(root), "cache": str(tmp_path / "cache")}


def test_train_patches_shapes_ranges_and_cell(train_cfg):
    ds = data.TrainPatches(train_cfg, patch=48, scale_min=1.0, scale_max=4.0, sample_q=2304, repeat=2, seed=0)
    assert len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        assert item["inp"].shape == (3, 48, 48) and item["coord"].shape == (2304, 2)
        assert item["cell"].shape == (2304, 2) and item["gt"].shape == (2304, 3) and item["scale"].shape == ()
        assert -1 <= item["inp"].min() and item["inp"].max() <= 1
        assert -1 <= item["gt"].min() and item["gt"].max() <= 1
        assert -1 < item["coord"].min() and item["coord"].max() < 1
        s = float(item["scale"])
        assert 1.0 <= s <= 4.0
        size = round(48 * s)
        assert torch.allclose(item["cell"], torch.full((2304, 2), 2 / size))
        assert len({tuple(c) for c in item["coord"].tolist()}) == 2304     # distinct pixels


def test_train_patches_is_deterministic_per_seed_epoch_index(train_cfg):
    a = data.TrainPatches(train_cfg, seed=3, repeat=2)
    b = data.TrainPatches(train_cfg, seed=3, repeat=2)
    for key in ("inp", "coord", "gt", "scale"):
        assert torch.equal(a[4][key], b[4][key])
    _ = a[0], a[5]                                                   # order does not matter
    assert torch.equal(a[4]["gt"], b[4]["gt"])
    a.set_epoch(1)
    assert not torch.equal(a[4]["coord"], b[4]["coord"])
    b.set_epoch(1)
    assert torch.equal(a[4]["coord"], b[4]["coord"])
    c = data.TrainPatches(train_cfg, seed=4, repeat=2)
    c.set_epoch(1)
    assert not torch.equal(c[4]["coord"], a[4]["coord"])


def test_train_patches_queries_match_input_under_augmentation(train_cfg):
    # scale 1: the HR crop is the 16x16 LR itself; with every pixel queried, the
    # gt placed at its coordinates must rebuild inp exactly (flips applied to both).
    ds = data.TrainPatches(train_cfg, patch=16, scale_min=1, scale_max=1, sample_q=256, seed=1)
    flipped = 0
    for i in range(6):
        item = ds[i]
        rows = ((item["coord"][:, 0] + 1) * 16 / 2 - 0.5).round().long()
        cols = ((item["coord"][:, 1] + 1) * 16 / 2 - 0.5).round().long()
        img = torch.zeros(3, 16, 16)
        img[:, rows, cols] = item["gt"].t()
        assert torch.allclose(img, item["inp"], atol=1e-6)
        u8 = ((img.permute(1, 2, 0) + 1) / 2 * 255).round().byte().numpy()
        found = False
        for im in ds.images:                       # is it a plain (unflipped) crop somewhere?
            for r, c in zip(*np.nonzero((im[:-15, :-15] == u8[0, 0]).all(-1))):
                found |= np.array_equal(im[r:r + 16, c:c + 16], u8)
        flipped += not found
    assert flipped > 0        # some items were flipped/transposed, so they match no plain crop


def test_train_patches_reads_train_config_section(train_cfg):
    ds = data.TrainPatches(train_cfg, {"patch_size": 24, "sample_q": 100, "repeat": 3, "lr": 1e-4}, 5)
    assert (ds.patch, ds.sample_q, ds.repeat, ds.seed) == (24, 100, 3, 5)
    assert ds[0]["inp"].shape == (3, 24, 24)
    with pytest.raises(HarnessError, match="smaller than"):
        data.TrainPatches(train_cfg, patch=64)               # x4 patch 256 > images


def test_embedded_training_set_works(embedded):
    ds = data.TrainPatches(embedded, seed=0, repeat=1)
    assert len(ds) == len(data.EMBEDDED_SETS["div2k-train"])
    assert ds[len(ds) - 1]["inp"].shape == (3, 48, 48)


def test_prepare_rows_generate_then_reuse_the_cache(folders):
    first = data.prepare(folders, ["b100", "div2k-valid"], (2, 4))
    assert [(r["dataset"], r["images"], r["min_size"], r["max_size"]) for r in first] == [
        ("b100", 2, "61x64", "64x83"), ("div2k-valid", 1, "300x451", "300x451")]
    assert first[0]["lr"] == {"x2": "2 generated", "x4": "2 generated"}
    again = data.prepare(folders, ["b100"], (2,))
    assert again[0]["lr"] == {"x2": "2 cached"}
    with pytest.raises(HarnessError, match="x2, x3 and x4 only"):
        data.prepare(folders, ["b100"], (5,))


# ------------------------------------------------------------------------- verb
def test_prepare_data_verb(folders, capsys, tmp_path):
    rc = main(["prepare-data", "--source", "folders", "--root", folders["root"],
               "--cache", folders["cache"], "--datasets", "b100", "div2k-valid"])
    out = capsys.readouterr().out
    assert rc == 0 and "b100" in out and "generated" in out
    assert data.lr_cache_path(folders, "div2k-valid", "0801", 4).is_file()
    rc = main(["prepare-data", "--source", "folders", "--root", str(tmp_path / "none"),
               "--cache", folders["cache"], "--datasets", "set5"])
    assert rc == 2 and "Set5" in capsys.readouterr().err

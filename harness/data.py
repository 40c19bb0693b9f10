"""Datasets: the standard folder layouts, the embedded default, evaluation pairs
and the training sampler.

Data configuration (``data_cfg``, the ``data:`` section of the config)::

    {"source": "embedded" | "folders", "root": "data", "cache": "results/cache"}

Dataset names used everywhere: ``div2k-train``, ``div2k-valid``, ``set5``,
``set14``, ``b100``, ``urban100``, ``manga109``. DIV2K is scored on RGB, the five
benchmarks on Y (``is_benchmark``).

Folder layout (``source: folders``), under ``root``::

    DIV2K_train_HR/0001.png ...                 div2k-train
    DIV2K_valid_HR/0801.png ...                 div2k-valid
    DIV2K_valid_LR_bicubic/X2/0801x2.png ...    optional (X2, X3, X4)
    benchmark/{Set5,Set14,B100,Urban100,Manga109}/HR/<name>.png
    benchmark/<Set>/LR_bicubic/X2/<name>x2.png  optional (X2, X3, X4)

LR images (``eval_pairs``), following LIIF/LTE:

- x2, x3, x4: the precomputed MATLAB-bicubic LR file ``<name>x<s>.png`` when the
  ``X<s>`` folder exists (then it must be complete). Otherwise we make it with
  our MATLAB-compatible ``harness.bicubic.imresize_uint8(hr, 1/s)`` from the HR
  image cropped to a multiple of s (as the benchmark LR files were made), and
  cache it as a uint8 PNG under ``<cache>/lr/`` (written atomically, made once).
  The HR image is cropped to the LR size times s.
- any other scale, on the fly: ``h_lr = floor(H / s + 1e-9)`` (same for W), HR
  cropped to ``round(h_lr * s)``, LR = PIL bicubic of that crop (uint8).

The embedded default (``source: embedded``): images that ship inside
scikit-image (no download), split into a training set (7 photographs) and
held-out stand-ins for DIV2K-valid (3 colour photographs, RGB metric), B100
(3 natural photographs), Urban100 (3 man-made structures) and Manga109 (3
graphics: flat colours and sharp edges, the closest thing to drawings that
ships offline), all Y metric; Set5 (5) and Set14 (all 12) stand-ins are drawn
from the held-out images. ``embedded_split()`` returns
the table (image, source size, preparation, size, role); the module constant
``EMBEDDED_SETS`` lists the membership. Evaluation images are about 300-320 px
on the short side, so that x30 still leaves an LR of at least 10 px and every
set evaluates in seconds on 2 CPU cores; training images are used at their
native size (all at least 192 px, the HR patch of x4). Grey images are stacked
to three identical channels, and the alpha channel of RGBA images is dropped
(``as_rgb_uint8``). The embedded HR images are written once, as PNG, under
``<cache>/embedded-v1/`` in the folder layout above, and from there on are read
exactly like the folder datasets (one code path for both sources).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from harness.bicubic import imresize_uint8, pil_bicubic_resize, to_uint8
from harness.errors import HarnessError
from harness.io import atomic_path
from harness.protocol import matlab_scale, normalize
from upsamplers.coords import make_coord

__all__ = [
    "DATASETS", "BENCHMARKS", "EMBEDDED_SETS", "is_benchmark", "dataset_names",
    "check_data_cfg", "dataset_root", "hr_files", "read_image", "write_png", "as_rgb_uint8",
    "load_hr_images", "eval_pairs", "on_the_fly_pair", "lr_cache_path", "embedded_split", "build_embedded",
    "prepare", "TrainSampler",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_DATA_CFG = {"source": "embedded", "root": "data", "cache": "results/cache"}

_DIV2K_HOW = ("Download it from https://data.vision.ee.ethz.ch/cvl/DIV2K/ ({zip}) and unzip it "
              "into the data root so that {where} holds the PNG files")
_BENCH_HOW = ("Download the benchmark package (Set5, Set14, B100, Urban100 as packaged by EDSR: "
              "https://cv.snu.ac.kr/research/EDSR/benchmark.tar; Manga109 on request from "
              "http://www.manga109.org) and extract it so that {where} holds the HR PNG files; "
              "LR_bicubic/X2..X4 are optional (made with MATLAB-compatible bicubic and cached)")


@dataclass(frozen=True)
class DatasetLayout:
    """Where a dataset lives under the data root."""
    name: str
    hr: str                 # HR folder, relative to the root
    lr: str | None          # folder holding X2/X3/X4 (optional), relative to the root
    y_channel: bool         # benchmark metric (Y of the difference, shave s)
    how: str                # how to obtain it

    def obtain(self, root: Path) -> str:
        return self.how.format(where=root / self.hr)


def _bench(name: str, folder: str) -> DatasetLayout:
    return DatasetLayout(name, f"benchmark/{folder}/HR", f"benchmark/{folder}/LR_bicubic", True, _BENCH_HOW)


DATASETS: dict[str, DatasetLayout] = {
    "div2k-train": DatasetLayout("div2k-train", "DIV2K_train_HR", None, False,
                                 _DIV2K_HOW.replace("{zip}", "DIV2K_train_HR.zip")),
    "div2k-valid": DatasetLayout("div2k-valid", "DIV2K_valid_HR", "DIV2K_valid_LR_bicubic", False,
                                 _DIV2K_HOW.replace("{zip}", "DIV2K_valid_HR.zip; optionally "
                                                    "DIV2K_valid_LR_bicubic_X2/X3/X4.zip")),
    "set5": _bench("set5", "Set5"),
    "set14": _bench("set14", "Set14"),
    "b100": _bench("b100", "B100"),
    "urban100": _bench("urban100", "Urban100"),
    "manga109": _bench("manga109", "Manga109"),
}
BENCHMARKS = frozenset(n for n, d in DATASETS.items() if d.y_channel)


def dataset_names() -> list[str]:
    return list(DATASETS)


def _layout(dataset: str) -> DatasetLayout:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise HarnessError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}") from None


def is_benchmark(dataset: str) -> bool:
    """True for Set5/Set14/B100/Urban100/Manga109 (Y metric, shave s), False for DIV2K (RGB, s+6)."""
    return _layout(dataset).y_channel


def check_data_cfg(data_cfg: Mapping[str, Any]) -> dict:
    """Validate ``data_cfg`` (keys source, root, cache; nothing else) and fill defaults."""
    if not isinstance(data_cfg, Mapping):
        raise HarnessError(f"data configuration must be a mapping, got {type(data_cfg).__name__}")
    unknown = set(data_cfg) - set(DEFAULT_DATA_CFG)
    if unknown:
        raise HarnessError(f"unknown data configuration key(s) {sorted(unknown)}; "
                           f"allowed: {sorted(DEFAULT_DATA_CFG)}")
    cfg = {**DEFAULT_DATA_CFG, **data_cfg}
    if cfg["source"] not in ("embedded", "folders"):
        raise HarnessError(f"data source must be 'embedded' or 'folders', got {cfg['source']!r}")
    return cfg


# ------------------------------------------------------------------- image files
def as_rgb_uint8(arr) -> np.ndarray:
    """Any 8-bit-range image to ``(H, W, 3)`` uint8 RGB, deliberately:

    grey ``(H, W)`` / ``(H, W, 1)`` is stacked to three identical channels (so the
    RGB and Y metrics apply unchanged); the alpha channel of grey+alpha / RGBA is
    dropped, not composited (SR datasets store opaque images; compositing would
    invent a background colour). bool becomes 0/255; float in [0, 1] is scaled by
    255 and rounded.
    """
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
            raise ValueError("float images must lie in [0, 1]")
        a = to_uint8(a * 255.0)
    elif a.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {a.dtype}")
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image shape {a.shape}")
    if a.shape[2] in (2, 4):
        a = a[..., :-1]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.array(a, order="C")        # a writable copy (PIL's arrays are read-only)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8; an unreadable file is a HarnessError naming it."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = to_uint8(np.asarray(im, dtype=np.float64) / 257.0)   # 16-bit -> 8-bit
            elif im.mode == "1":
                arr = np.asarray(im.convert("L"))
            elif im.mode == "P":
                arr = np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
            elif im.mode in ("L", "LA", "RGB", "RGBA"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("RGB"))
        return as_rgb_uint8(arr)
    except Exception as exc:  # PIL raises several types for broken files
        raise HarnessError(f"cannot read image {path}: {exc}") from exc


def write_png(path: str | Path, arr: np.ndarray) -> None:
    """Write a uint8 image as PNG atomically (a killed job leaves no partial file)."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1] (a copy)."""
    return torch.from_numpy(np.array(arr, dtype=np.float32).transpose(2, 0, 1) / 255.0).contiguous()


# ------------------------------------------------------------------ embedded sets
@dataclass(frozen=True)
class EmbeddedImage:
    name: str
    loader: Callable[[], np.ndarray]
    source: str           # where it comes from
    prep: tuple           # ("native",) | ("resize", factor) | ("size", (h, w)) | ("crop", (h, w))
    shape: tuple          # final (h, w), checked when built
    content: str


def _skimage(fn: str, index: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data
        img = getattr(skimage.data, fn)()
        return img[index] if index is not None else img
    return load


_IMAGES = {img.name: img for img in [
    # training (native size: the sampler crops up to 192 px patches)
    EmbeddedImage("astronaut", _skimage("astronaut"), "skimage.data.astronaut", ("native",), (512, 512), "portrait, colour"),
    EmbeddedImage("hubble_deep_field", _skimage("hubble_deep_field"), "skimage.data.hubble_deep_field", ("native",), (872, 1000), "galaxies on black, colour"),
    EmbeddedImage("immunohistochemistry", _skimage("immunohistochemistry"), "skimage.data.immunohistochemistry", ("native",), (512, 512), "stained tissue, colour"),
    EmbeddedImage("motorcycle_left", _skimage("stereo_motorcycle", 0), "skimage.data.stereo_motorcycle()[0]", ("native",), (500, 741), "motorcycle in a workshop, colour (left view only)"),
    EmbeddedImage("grass", _skimage("grass"), "skimage.data.grass", ("native",), (512, 512), "grass texture, grey"),
    EmbeddedImage("gravel", _skimage("gravel"), "skimage.data.gravel", ("native",), (512, 512), "gravel texture, grey"),
    EmbeddedImage("cell", _skimage("cell"), "skimage.data.cell", ("native",), (660, 550), "microscopy, grey"),
    # DIV2K-valid stand-in: colour photographs (RGB metric)
    EmbeddedImage("chelsea", _skimage("chelsea"), "skimage.data.chelsea", ("native",), (300, 451), "cat, colour"),
    EmbeddedImage("coffee", _skimage("coffee"), "skimage.data.coffee", ("resize", 0.75), (300, 450), "coffee cup, colour"),
    EmbeddedImage("retina", _skimage("retina"), "skimage.data.retina", ("size", (320, 320)), (320, 320), "fundus photograph, colour"),
    # B100 stand-in: natural photographs (Y metric)
    EmbeddedImage("camera", _skimage("camera"), "skimage.data.camera", ("resize", 0.625), (320, 320), "cameraman, grey"),
    EmbeddedImage("coins", _skimage("coins"), "skimage.data.coins", ("native",), (303, 384), "coins, grey"),
    EmbeddedImage("moon", _skimage("moon"), "skimage.data.moon", ("resize", 0.625), (320, 320), "lunar surface, grey"),
    # Urban100 stand-in: man-made, regular structures (Y metric)
    EmbeddedImage("brick", _skimage("brick"), "skimage.data.brick", ("crop", (320, 320)), (320, 320), "brick wall, grey"),
    EmbeddedImage("clock", _skimage("clock"), "skimage.data.clock", ("native",), (300, 400), "wall clock, grey"),
    EmbeddedImage("rocket", _skimage("rocket"), "skimage.data.rocket", ("resize", 0.75), (321, 480), "launch tower and rocket, colour"),
    # Manga109 stand-in: drawings, flat regions and sharp edges (Y metric)
    EmbeddedImage("colorwheel", _skimage("colorwheel"), "skimage.data.colorwheel", ("native",), (370, 371), "colour wheel graphic"),
    EmbeddedImage("horse", _skimage("horse"), "skimage.data.horse", ("native",), (328, 400), "binary silhouette drawing"),
    EmbeddedImage("logo", _skimage("logo"), "skimage.data.logo", ("resize", 0.64), (320, 320), "scikit-image logo, RGBA (alpha dropped)"),
]}

_HELD_OUT = ("chelsea", "coffee", "retina", "camera", "coins", "moon",
             "brick", "clock", "rocket", "colorwheel", "horse", "logo")

#: Dataset -> embedded images. Training and evaluation images are disjoint.
EMBEDDED_SETS: dict[str, tuple[str, ...]] = {
    "div2k-train": ("astronaut", "hubble_deep_field", "immunohistochemistry", "motorcycle_left",
                    "grass", "gravel", "cell"),
    "div2k-valid": ("chelsea", "coffee", "retina"),
    "b100": ("camera", "coins", "moon"),
    "urban100": ("brick", "clock", "rocket"),
    "manga109": ("colorwheel", "horse", "logo"),
    "set5": ("brick", "camera", "chelsea", "coins", "colorwheel"),
    "set14": _HELD_OUT,
}
_ROLE = {
    "div2k-train": "training",
    "div2k-valid": "DIV2K-valid stand-in (RGB, shave s+6)",
    "b100": "B100 stand-in (Y, shave s)",
    "urban100": "Urban100 stand-in (Y, shave s)",
    "manga109": "Manga109 stand-in (Y, shave s)",
    "set5": "Set5 stand-in (Y, shave s)",
    "set14": "Set14 stand-in (Y, shave s)",
}
_EMBEDDED_DIR = "embedded-v1"   # bump when a recipe changes, so stale files are never read


def _prepare_embedded(img: EmbeddedImage) -> np.ndarray:
    arr = as_rgb_uint8(img.loader())
    kind = img.prep[0]
    if kind == "resize":
        arr = imresize_uint8(arr, scale=img.prep[1])
    elif kind == "size":
        arr = imresize_uint8(arr, output_shape=img.prep[1])
    elif kind == "crop":
        h, w = img.prep[1]
        top, left = (arr.shape[0] - h) // 2, (arr.shape[1] - w) // 2
        arr = arr[top:top + h, left:left + w]
    if arr.shape[:2] != tuple(img.shape):
        raise RuntimeError(f"embedded image {img.name}: built {arr.shape[:2]}, recipe says {img.shape}")
    return np.ascontiguousarray(arr)


def _prep_text(prep: tuple) -> str:
    if prep[0] == "native":
        return "as shipped"
    if prep[0] == "resize":
        return f"MATLAB bicubic x{prep[1]}"
    if prep[0] == "size":
        return f"MATLAB bicubic to {prep[1][0]}x{prep[1][1]}"
    return f"centre crop {prep[1][0]}x{prep[1][1]}"


def embedded_split() -> list[dict]:
    """The embedded split, one row per (dataset, image): for the README and the report."""
    rows = []
    for dataset, names in EMBEDDED_SETS.items():
        for name in names:
            img = _IMAGES[name]
            rows.append({"dataset": dataset, "role": _ROLE[dataset], "image": name,
                         "source": img.source, "preparation": _prep_text(img.prep),
                         "size": f"{img.shape[0]}x{img.shape[1]}", "content": img.content})
    return rows


def build_embedded(cache: str | Path) -> Path:
    """Write the embedded sets as a folder layout under ``<cache>/embedded-v1`` (once); return it."""
    root = Path(cache) / _EMBEDDED_DIR
    built: dict[str, np.ndarray] = {}
    for dataset, names in EMBEDDED_SETS.items():
        folder = root / DATASETS[dataset].hr
        for name in names:
            path = folder / f"{name}.png"
            if path.is_file():
                continue
            if name not in built:
                built[name] = _prepare_embedded(_IMAGES[name])
            write_png(path, built[name])
    return root


# ----------------------------------------------------------------- folder access
def dataset_root(data_cfg: Mapping[str, Any]) -> Path:
    """The folder-layout root of ``data_cfg`` (building the embedded sets if needed)."""
    cfg = check_data_cfg(data_cfg)
    if cfg["source"] == "embedded":
        return build_embedded(cfg["cache"])
    return Path(cfg["root"])


def _missing(dataset: str, root: Path, folder: Path, what: str) -> HarnessError:
    layout = _layout(dataset)
    return HarnessError(f"dataset '{dataset}' {what}: {folder}. {layout.obtain(root)}. "
                        f"(Or use the embedded default: data source 'embedded'.)")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS)


def hr_files(data_cfg: Mapping[str, Any], dataset: str) -> list[Path]:
    """Sorted HR image files of ``dataset``; a missing/empty folder is one HarnessError."""
    layout = _layout(dataset)
    root = dataset_root(data_cfg)
    folder = root / layout.hr
    if not folder.is_dir():
        raise _missing(dataset, root, folder, "not found, missing folder")
    files = _list_images(folder)
    if not files:
        raise _missing(dataset, root, folder, "is incomplete, no images (png/jpg/bmp/tif) in folder")
    return files


def load_hr_images(data_cfg: Mapping[str, Any], dataset: str) -> list[tuple[str, np.ndarray]]:
    """``(name, (H, W, 3) uint8)`` for every HR image of ``dataset``, sorted by name."""
    return [(f.stem, read_image(f)) for f in hr_files(data_cfg, dataset)]


def _cache_key(cfg: dict) -> str:
    if cfg["source"] == "embedded":
        return _EMBEDDED_DIR
    digest = hashlib.sha1(str(Path(cfg["root"]).resolve()).encode()).hexdigest()[:8]
    return f"folders-{digest}"


def lr_cache_path(data_cfg: Mapping[str, Any], dataset: str, name: str, scale: int) -> Path:
    """Where the generated x2/x3/x4 LR image of one HR image is cached."""
    cfg = check_data_cfg(data_cfg)
    return Path(cfg["cache"]) / "lr" / _cache_key(cfg) / dataset / f"X{scale}" / f"{name}x{scale}.png"


def _matlab_lr(hr: np.ndarray, s: int) -> np.ndarray:
    """LR of x2/x3/x4: MATLAB bicubic of the HR image cropped to a multiple of s."""
    h, w = (hr.shape[0] // s) * s, (hr.shape[1] // s) * s
    if h == 0 or w == 0:
        raise HarnessError(f"image of {hr.shape[0]}x{hr.shape[1]} is too small for x{s}")
    return imresize_uint8(hr[:h, :w], scale=1.0 / s)


def _cached_lr(cfg: dict, dataset: str, name: str, hr: np.ndarray, s: int) -> tuple[np.ndarray, bool]:
    """The cached LR (made and written once); returns (lr, written_now)."""
    path = lr_cache_path(cfg, dataset, name, s)
    expect = (hr.shape[0] // s, hr.shape[1] // s)
    if path.is_file():
        lr = read_image(path)
        if lr.shape[:2] == expect:
            return lr, False
    lr = _matlab_lr(hr, s)
    write_png(path, lr)
    return lr, True


def _precomputed_lr_file(lr_dir: Path, stem: str, s: int) -> Path | None:
    for ext in (".png", ".PNG", ".bmp", ".jpg"):
        p = lr_dir / f"{stem}x{s}{ext}"
        if p.is_file():
            return p
    return None


def _lr_pairs(cfg: dict, dataset: str, s: int) -> Iterator[tuple[str, np.ndarray, np.ndarray, str]]:
    """(name, lr, hr, how) for x2/x3/x4, uint8, HR already cropped to LR size * s.

    The layout is checked when this is called, the images are read while iterating.
    """
    layout = _layout(dataset)
    root = dataset_root(cfg)
    files = hr_files(cfg, dataset)
    lr_dir = root / layout.lr / f"X{s}" if layout.lr else None
    precomputed = lr_dir is not None and lr_dir.is_dir()
    if precomputed:   # a present LR folder must be complete: never mix MATLAB files and ours
        absent = [f for f in files if _precomputed_lr_file(lr_dir, f.stem, s) is None]
        if absent:
            raise HarnessError(
                f"dataset '{dataset}' is incomplete: folder {lr_dir} lacks "
                f"{', '.join(f'{a.stem}x{s}.png' for a in absent[:3])}"
                f"{' ...' if len(absent) > 3 else ''} ({len(absent)} of {len(files)} missing). "
                f"Complete it, or remove {lr_dir} to have the LR images generated with "
                f"MATLAB-compatible bicubic into the cache.")

    def pairs():
        for f in files:
            hr = read_image(f)
            if precomputed:
                lr, how = read_image(_precomputed_lr_file(lr_dir, f.stem, s)), "precomputed"
            else:
                lr, written = _cached_lr(cfg, dataset, f.stem, hr, s)
                how = "generated" if written else "cached"
            h, w = lr.shape[0] * s, lr.shape[1] * s
            if hr.shape[0] < h or hr.shape[1] < w:
                raise HarnessError(f"LR image for {f} is {lr.shape[0]}x{lr.shape[1]}, too large for "
                                   f"x{s} of an HR image of {hr.shape[0]}x{hr.shape[1]}")
            yield f.stem, lr, hr[:h, :w], how
    return pairs()


def on_the_fly_pair(hr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(lr, hr crop) for scales other than x2/x3/x4: LIIF/LTE's ``sr-implicit-downsampled``.

    ``h_lr = floor(H / s + 1e-9)``, HR cropped to ``round(h_lr * s)`` (Python's
    round, as LIIF), LR = PIL bicubic of the crop (uint8).
    """
    s = float(scale)
    h_lr = math.floor(hr.shape[0] / s + 1e-9)
    w_lr = math.floor(hr.shape[1] / s + 1e-9)
    if h_lr < 1 or w_lr < 1:
        raise HarnessError(f"image of {hr.shape[0]}x{hr.shape[1]} is too small for x{s:g}")
    crop = np.ascontiguousarray(hr[:round(h_lr * s), :round(w_lr * s)])
    return pil_bicubic_resize(crop, (h_lr, w_lr)), crop


def eval_pairs(data_cfg: Mapping[str, Any], dataset: str, scale: float
               ) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Yield ``(name, lr (3,h,w), hr (3,H,W))`` float32 tensors in [0, 1], sorted by name.

    x2/x3/x4 use MATLAB-bicubic LR (precomputed files, else generated and cached);
    other scales are made on the fly with PIL bicubic (see the module docstring).
    A missing or incomplete dataset raises here, at the call; unreadable images
    raise while iterating.
    """
    cfg = check_data_cfg(data_cfg)
    if float(scale) < 1:
        raise HarnessError(f"scale must be >= 1, got {scale}")
    s_int = matlab_scale(scale)
    if s_int is not None:
        source = _lr_pairs(cfg, dataset, s_int)          # checks the layout now
        return ((name, _to_tensor(lr), _to_tensor(hr)) for name, lr, hr, _ in source)
    files = hr_files(cfg, dataset)                       # checks the layout now

    def pairs():
        for f in files:
            lr, hr = on_the_fly_pair(read_image(f), scale)
            yield f.stem, _to_tensor(lr), _to_tensor(hr)
    return pairs()


# ------------------------------------------------------------------ prepare-data
def prepare(data_cfg: Mapping[str, Any], datasets: list[str] | None = None,
            scales: tuple[int, ...] = (2, 3, 4)) -> list[dict]:
    """Check every dataset's layout, read every image, build the LR cache; one row per dataset.

    All missing datasets are reported in ONE HarnessError (each folder named).
    """
    cfg = check_data_cfg(data_cfg)
    names = list(DATASETS) if datasets is None else list(datasets)
    for n in names:
        _layout(n)
    for s in scales:
        if matlab_scale(s) is None:
            raise HarnessError(f"the LR cache holds x2, x3 and x4 only, not x{s}")
    problems, rows = [], []
    for n in names:
        try:
            files = hr_files(cfg, n)
        except HarnessError as exc:
            problems.append(str(exc))
            continue
        sizes = [read_image(f).shape[:2] for f in files]
        row = {"dataset": n, "images": len(files),
               "min_size": f"{min(h for h, _ in sizes)}x{min(w for _, w in sizes)}",
               "max_size": f"{max(h for h, _ in sizes)}x{max(w for _, w in sizes)}", "lr": {}}
        if n != "div2k-train":
            for s in scales:
                counts: dict[str, int] = {}
                for *_, how in _lr_pairs(cfg, n, int(s)):
                    counts[how] = counts.get(how, 0) + 1
                row["lr"][f"x{int(s)}"] = ", ".join(f"{v} {k}" for k, v in counts.items())
        rows.append(row)
    if problems:
        raise HarnessError(" | ".join(problems))
    return rows


# ------------------------------------------------------------------ training data
_TRAIN_DEFAULTS = {"patch": 48, "scale_min": 1.0, "scale_max": 4.0, "sample_q": 2304,
                   "repeat": 20, "augment": True, "seed": 0}
_TRAIN_ALIASES = {"patch_size": "patch", "inp_size": "patch"}


class TrainSampler(Dataset):
    """LIIF/LTE training pairs (``sr-implicit-downsampled``) over the training HR images.

    Per item: s ~ U(scale_min, scale_max); a random ``round(patch * s)`` HR crop;
    LR = PIL bicubic of the crop to ``patch x patch`` (uint8); flips of rows, of
    columns and a transpose with p = 0.5 each (same for LR and HR); ``sample_q``
    distinct random HR pixels as queries. Returns normalised ``inp (3,p,p)``,
    ``coord (Q,2)`` (``make_coord`` of the HR crop), ``cell (Q,2)`` = 2 / crop size,
    normalised ``gt (Q,3)`` and ``scale ()`` = crop size / patch (the exact ratio of
    the pair; within 1/(2 patch) of the sampled s).

    Randomness comes only from a generator seeded with ``(seed, epoch, index)``:
    an item is the same whatever the worker, order or resume point. Call
    ``set_epoch`` before each epoch (with DataLoader workers, before creating the
    iterator; do not use ``persistent_workers``). Length = images * repeat; item i
    uses image ``i % images``. HR images are held in memory as uint8.

    ``TrainSampler(data_cfg, train_cfg, seed)`` (the config's ``train:`` section;
    ``patch_size``, ``scale_min``, ``scale_max``, ``sample_q``, ``repeat``, ``seed``
    are read, other keys ignored) or keywords; keywords win.
    """

    def __init__(self, data_cfg: Mapping[str, Any], train_cfg: Mapping[str, Any] | None = None,
                 seed: int | None = None, *, patch: int | None = None, scale_min: float | None = None,
                 scale_max: float | None = None, sample_q: int | None = None, repeat: int | None = None,
                 augment: bool | None = None, dataset: str = "div2k-train"):
        opts = dict(_TRAIN_DEFAULTS)
        for key, value in (train_cfg or {}).items():
            key = _TRAIN_ALIASES.get(key, key)
            if key in opts:
                opts[key] = value
        given = {"patch": patch, "scale_min": scale_min, "scale_max": scale_max,
                 "sample_q": sample_q, "repeat": repeat, "augment": augment, "seed": seed}
        opts.update({k: v for k, v in given.items() if v is not None})
        self.patch = int(opts["patch"])
        self.scale_min, self.scale_max = float(opts["scale_min"]), float(opts["scale_max"])
        self.sample_q, self.repeat = int(opts["sample_q"]), int(opts["repeat"])
        self.augment, self.seed = bool(opts["augment"]), int(opts["seed"])
        if not 1.0 <= self.scale_min <= self.scale_max:
            raise HarnessError(f"need 1 <= scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if self.seed < 0:
            raise HarnessError(f"seed must be >= 0, got {self.seed}")
        smallest = round(self.patch * self.scale_min)
        if self.sample_q > smallest * smallest:
            raise HarnessError(f"sample_q {self.sample_q} exceeds the {smallest}x{smallest} pixels "
                               f"of the smallest HR patch")
        self.names, self.images = [], []
        for name, img in load_hr_images(data_cfg, dataset):
            self.names.append(name)
            self.images.append(img)
        largest = round(self.patch * self.scale_max)
        for name, img in zip(self.names, self.images):
            if min(img.shape[:2]) < largest:
                raise HarnessError(f"training image {name} is {img.shape[0]}x{img.shape[1]}, smaller "
                                   f"than the {largest}x{largest} HR patch of x{self.scale_max:g}")
        self.epoch = 0
        self._coord_cache: dict[int, np.ndarray] = {}

    def _coords(self, size: int) -> np.ndarray:
        if size not in self._coord_cache:
            self._coord_cache[size] = make_coord((size, size)).numpy()
        return self._coord_cache[size]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        img = self.images[index % len(self.images)]
        s = rng.uniform(self.scale_min, self.scale_max)
        size = round(self.patch * s)
        top = int(rng.integers(0, img.shape[0] - size + 1))
        left = int(rng.integers(0, img.shape[1] - size + 1))
        crop = img[top:top + size, left:left + size]
        lr = pil_bicubic_resize(np.ascontiguousarray(crop), (self.patch, self.patch))
        if self.augment:        # on the uint8 arrays (H, W, C): rows, columns, transpose
            flip_rows, flip_cols, transpose = rng.random(3) < 0.5
            if flip_rows:
                crop, lr = crop[::-1], lr[::-1]
            if flip_cols:
                crop, lr = crop[:, ::-1], lr[:, ::-1]
            if transpose:
                crop, lr = crop.swapaxes(0, 1), lr.swapaxes(0, 1)
        pick = rng.choice(size * size, self.sample_q, replace=False)
        gt = torch.from_numpy(np.ascontiguousarray(crop).reshape(-1, 3)[pick]).to(torch.float32) / 255.0
        coord = torch.from_numpy(self._coords(size)[pick])     # numpy indexing: much faster
        cell = torch.tensor([2.0 / size, 2.0 / size], dtype=torch.float32).expand(self.sample_q, 2).clone()
        return {"inp": normalize(_to_tensor(lr)), "coord": coord, "cell": cell,
                "gt": normalize(gt), "scale": torch.tensor(size / self.patch, dtype=torch.float32)}

"""The embedded default (``source: embedded``): images that ship inside scikit-image.

Owns the recipes (which scikit-image image, how it is resized or cropped, its final
size), the split into datasets (``EMBEDDED_SETS``), the split table
(``embedded_split``) and writing the sets as a folder layout (``build_embedded``).

The split: a training set (7 photographs) and held-out stand-ins for DIV2K-valid
(3 colour photographs, RGB metric), B100 (3 natural photographs), Urban100 (3
man-made structures) and Manga109 (3 graphics: flat colours and sharp edges, the
closest thing to drawings that ships offline), all Y metric; the Set5 (5) and
Set14 (all 12) stand-ins are drawn from the held-out images. Evaluation images are
about 300-320 px on the short side, so that x30 still leaves an LR of at least
10 px; training images keep their native size (all at least 192 px, the HR patch
of x4). Images become RGB uint8 through ``as_rgb_uint8`` (grey stacked, alpha
dropped). The HR images are written once, as PNG, under ``<cache>/embedded-v1/``
in the folder layout of ``harness.data.layouts``, and from there on are read
exactly like the folder datasets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness.bicubic import imresize_uint8
from harness.data.images import as_rgb_uint8, write_png
from harness.data.layouts import DATASETS

#: Folder under the cache holding the built sets; bump it when a recipe changes,
#: so stale files are never read. Also names the sets' LR cache folder.
EMBEDDED_DIR = "embedded-v1"


@dataclass(frozen=True)
class EmbeddedImage:
    """One embedded image: how to load it from scikit-image and prepare it."""
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
    # training (native size: the training patches crop up to 192 px)
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
    root = Path(cache) / EMBEDDED_DIR
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

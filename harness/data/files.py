"""A dataset's HR image files on disk, for either source: the embedded sets are built
into the folder layout of ``harness.data.layouts`` first, then read like real folders."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from harness.data.embedded import build_embedded
from harness.data.images import read_image
from harness.data.layouts import IMAGE_EXTS, check_data_cfg, layout_of
from harness.errors import HarnessError


def dataset_root(data_cfg: Mapping[str, Any]) -> Path:
    """The folder-layout root of ``data_cfg`` (building the embedded sets if needed)."""
    cfg = check_data_cfg(data_cfg)
    if cfg["source"] == "embedded":
        return build_embedded(cfg["cache"])
    return Path(cfg["root"])


def _missing(dataset: str, root: Path, folder: Path, what: str) -> HarnessError:
    return HarnessError(f"dataset '{dataset}' {what}: {folder}. {layout_of(dataset).obtain(root)}. "
                        f"(Or use the embedded default: data source 'embedded'.)")


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS)


def hr_files(data_cfg: Mapping[str, Any], dataset: str) -> list[Path]:
    """Sorted HR image files of ``dataset``; a missing/empty folder is one HarnessError."""
    layout = layout_of(dataset)
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

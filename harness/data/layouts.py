"""Dataset names, where each dataset lives under the data root, and the ``data:`` configuration.

Data configuration (``data_cfg``, the ``data:`` section of the config)::

    {"source": "embedded" | "folders", "root": "data", "cache": "results/cache"}

Folder layout (``source: folders``), under ``root``::

    DIV2K_train_HR/0001.png ...                 div2k-train
    DIV2K_valid_HR/0801.png ...                 div2k-valid
    DIV2K_valid_LR_bicubic/X2/0801x2.png ...    optional (X2, X3, X4)
    benchmark/{Set5,Set14,B100,Urban100,Manga109}/HR/<name>.png
    benchmark/<Set>/LR_bicubic/X2/<name>x2.png  optional (X2, X3, X4)

DIV2K is scored on RGB, the five benchmarks on Y (``is_benchmark``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from harness.errors import HarnessError

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


def layout_of(dataset: str) -> DatasetLayout:
    """The layout of ``dataset``; an unknown name is a HarnessError listing the known ones."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise HarnessError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}") from None


def is_benchmark(dataset: str) -> bool:
    """True for Set5/Set14/B100/Urban100/Manga109 (Y metric, shave s), False for DIV2K (RGB, s+6)."""
    return layout_of(dataset).y_channel


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

"""Datasets: where they live, the embedded default, evaluation pairs and the training dataset.

Callers import from here (``from harness.data import eval_pairs``). Every function
takes the ``data:`` section of the config (``data_cfg``: ``source`` embedded or
folders, ``root``, ``cache``). Dataset names: ``div2k-train``, ``div2k-valid``,
``set5``, ``set14``, ``b100``, ``urban100``, ``manga109``.

Modules, one concern each:

- ``layouts``: dataset names, folder layouts, the metric of each, ``check_data_cfg``.
- ``images``: reading and writing image files, uint8 -> tensor.
- ``embedded``: the scikit-image recipes, the split, building the embedded sets.
- ``files``: a dataset's root and HR files, for either source.
- ``lr``: the x2/x3/x4 MATLAB-bicubic LR images and their cache.
- ``pairs``: evaluation pairs (``eval_pairs``, ``on_the_fly_pair``).
- ``preparation``: ``prepare``, the checks and cache building of ``prepare-data``.
- ``train_patches``: ``TrainPatches``, the training dataset.
"""
from harness.data.embedded import EMBEDDED_SETS, build_embedded, embedded_split
from harness.data.files import dataset_root, hr_files, load_hr_images
from harness.data.images import as_rgb_uint8, read_image, write_png
from harness.data.layouts import (BENCHMARKS, DATASETS, DatasetLayout, check_data_cfg, dataset_names,
                                  is_benchmark)
from harness.data.lr import lr_cache_path
from harness.data.pairs import eval_pairs, on_the_fly_pair
from harness.data.preparation import prepare
from harness.data.train_patches import TrainPatches

__all__ = [
    "DATASETS", "BENCHMARKS", "EMBEDDED_SETS", "DatasetLayout", "is_benchmark", "dataset_names",
    "check_data_cfg", "dataset_root", "hr_files", "read_image", "write_png", "as_rgb_uint8",
    "load_hr_images", "eval_pairs", "on_the_fly_pair", "lr_cache_path", "embedded_split",
    "build_embedded", "prepare", "TrainPatches",
]

"""``TrainPatches``: the training dataset, random LIIF/LTE patch pairs over the training HR images."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from harness.bicubic import pil_bicubic_resize
from harness.data.files import load_hr_images
from harness.data.images import to_tensor
from harness.errors import HarnessError
from harness.protocol import normalize
from harness.scales import scale_label
from upsamplers.coords import make_coord

_TRAIN_DEFAULTS = {"patch": 48, "scale_min": 1.0, "scale_max": 4.0, "sample_q": 2304,
                   "repeat": 20, "augment": True, "seed": 0}
_TRAIN_ALIASES = {"patch_size": "patch", "inp_size": "patch"}


class TrainPatches(Dataset):
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

    ``TrainPatches(data_cfg, train_cfg, seed)`` (the config's ``train:`` section;
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
                                   f"than the {largest}x{largest} HR patch of {scale_label(self.scale_max)}")
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
        coord = torch.from_numpy(self._coords(size)[pick])     # index the cached numpy grid
        cell = torch.tensor([2.0 / size, 2.0 / size], dtype=torch.float32).expand(self.sample_q, 2).clone()
        return {"inp": normalize(to_tensor(lr)), "coord": coord, "cell": cell,
                "gt": normalize(gt), "scale": torch.tensor(size / self.patch, dtype=torch.float32)}

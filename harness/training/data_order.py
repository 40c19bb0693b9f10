"""The order in which a run sees its training items, fixed by the seed and the step alone.

Every run sees one stream of sample indices: the concatenation of per-epoch
permutations of the training set, permutation ``e`` drawn from ``(seed, e)``
alone. Step ``k`` takes stream positions ``[k B, (k+1) B)`` of the *global*
batch ``B``; with ``W`` processes, rank ``r`` takes positions ``r, r + W, ...``
of it, so the data seen per step does not depend on ``W``. The item content is
deterministic per ``(seed, epoch, index)`` (the dataset's ``set_epoch``). So
resuming at step ``k`` needs no replay: the batch is computed from ``k``.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from harness.training.distributed import DistInfo
from harness.training.preemption import ignore_in_worker


@functools.lru_cache(maxsize=8)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` training items in ``epoch``: a function of ``(seed, epoch)`` only."""
    return np.random.default_rng([seed, epoch, 0x7AD7]).permutation(n)


def global_batch(n: int, batch: int, seed: int, step: int) -> list[tuple[int, int]]:
    """``(epoch, index)`` of the items of global batch ``step`` (0-based) in the data stream."""
    out = []
    for pos in range(step * batch, (step + 1) * batch):
        epoch, i = divmod(pos, n)
        out.append((epoch, int(epoch_permutation(n, seed, epoch)[i])))
    return out


def local_batch(n: int, batch: int, seed: int, step: int, dist: DistInfo) -> list[tuple[int, int]]:
    """This process's share of global batch ``step``: positions ``rank, rank + W, ...``."""
    return global_batch(n, batch, seed, step)[dist.rank::dist.world]


class StepBatches:
    """Batch sampler over steps ``[start, stop)`` yielding this process's ``(epoch, index)`` lists."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int, dist: DistInfo):
        self.n, self.batch, self.seed, self.start, self.stop, self.dist = n, batch, seed, start, stop, dist

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield local_batch(self.n, self.batch, self.seed, step, self.dist)


class EpochIndexed(torch.utils.data.Dataset):
    """``dataset[(epoch, i)]`` = item ``i`` of ``dataset`` in ``epoch`` (works in worker processes)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


def make_train_dataset(cfg: dict, train: dict, seed: int):
    """``harness.data.TrainPatches`` of config ``cfg`` for ``train`` (the resolved train settings)."""
    from harness.data import TrainPatches

    return TrainPatches(cfg["data"], train, seed=seed)


def batches(dataset, sampler: StepBatches, num_workers: int, pin_memory: bool = False):
    """Collated batches in step order; no global RNG is consumed (so resume stays exact).

    Worker processes ignore SIGTERM (:func:`harness.training.preemption.ignore_in_worker`).
    """
    from torch.utils.data import DataLoader, default_collate

    wrapped = EpochIndexed(dataset)
    if num_workers <= 0:
        for idx in sampler:
            yield default_collate([wrapped[i] for i in idx])
        return
    loader = DataLoader(wrapped, batch_sampler=sampler, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0), persistent_workers=False,
                        pin_memory=pin_memory, worker_init_fn=ignore_in_worker)
    yield from loader

"""Samplers for resumable, rank-independent training and exact distributed evaluation."""
from __future__ import annotations

import math
from typing import Iterator

from torch.utils.data import Dataset, DistributedSampler, Sampler


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler that can start mid-epoch and tags every index with the epoch.

    Yields ``(index, epoch)`` so :class:`~vheat.data.loaders.SeededTransformDataset` can
    draw the augmentation of a sample from (seed, epoch, index) alone: the same images
    come out however many processes or workers there are, and after a resume.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True,
                 drop_last: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's share of the epoch (mid-epoch resume)."""
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start:]
        return iter([(i, self.epoch) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


class ShardedEvalSampler(Sampler):
    """Rank r takes indices r, r + world, ...: no padding, so every image counts exactly once."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int):
        self.n, self.world, self.rank = len(dataset), num_replicas, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return max(0, math.ceil((self.n - self.rank) / self.world))

"""Datasets, timm transforms and data loaders for training and evaluation."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
import torch
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset

from vheat.train.progress import bars_wanted

from .digits import export_digits
from .folders import DatasetError, check_split, check_train_val, image_folder
from .samplers import ResumableDistributedSampler, ShardedEvalSampler
from .verify import verify_dataset


def sample_seed(seed: int, epoch: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class SeededTransformDataset(Dataset):
    """Applies a random transform with RNGs seeded from (seed, epoch, index).

    The caller's torch / numpy / python RNG states are restored afterwards, so data
    loading in the main process (num_workers=0) does not disturb drop path or Mixup.
    """

    def __init__(self, base, transform, seed: int):
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        img, target = self.base[index]
        s = sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            np.random.seed(s % (2**32))
            img = self.transform(img)
        random.setstate(py_state)
        np.random.set_state(np_state)
        return img, target


def build_transforms(cfg: dict, is_training: bool):
    d, a = cfg["data"], cfg["aug"]
    common = dict(input_size=d["img_size"], interpolation=d["interpolation"], mean=tuple(d["mean"]),
                  std=tuple(d["std"]))
    if not is_training or not a["enabled"]:
        return create_transform(is_training=False, crop_pct=d["crop_pct"], **common)
    return create_transform(
        is_training=True, scale=tuple(a["scale"]), ratio=tuple(a["ratio"]), hflip=a["hflip"],
        color_jitter=a["color_jitter"] or None, auto_augment=a["auto_augment"] or None,
        re_prob=a["re_prob"], re_mode=a["re_mode"], re_count=a["re_count"], **common)


def resolve_root(cfg: dict, export: bool = True) -> str:
    """Dataset root; for the built-in digits, exports the tree first if needed."""
    d = cfg["data"]
    if d["dataset"] == "digits":
        return export_digits(d["root"] or None, int(d["digits_size"])) if export else d["root"]
    if not d["root"]:
        raise DatasetError("data.root is empty: give an ImageFolder root holding train/ and val/ "
                           "(--data /path/to/imagenet), or use data.dataset=digits")
    return d["root"]


@dataclass
class DataBundle:
    classes: list[str]
    train: SeededTransformDataset
    val: Dataset
    train_sampler: ResumableDistributedSampler
    train_loader: DataLoader
    val_loader: DataLoader


def _loader_kwargs(cfg: dict) -> dict:
    workers = cfg["data"]["num_workers"]
    # A private generator: creating an iterator would otherwise draw from the global torch RNG,
    # and a mid-epoch resume creates one at a different point of the stream than the
    # uninterrupted run. (Augmentations are seeded per sample, so workers need no seed.)
    generator = torch.Generator().manual_seed(int(cfg["train"]["seed"]))
    return dict(num_workers=workers, pin_memory=bool(cfg["data"]["pin_memory"]) and torch.cuda.is_available(),
                persistent_workers=False, generator=generator)


def checked_image_folder(cfg: dict, root: str, split: str, rank: int):
    """The split's ImageFolder after the up-front image check (data.verify_images)."""
    ds = image_folder(root, split)
    verify_dataset(ds, cfg["data"]["verify_images"], progress=bars_wanted(cfg["train"]["progress"]) and rank == 0)
    return ds


def build_val_loader(cfg: dict, root: str, rank: int, world: int) -> tuple[list[str], Dataset, DataLoader]:
    classes = check_split(root, "val")
    val = checked_image_folder(cfg, root, "val", rank)
    val.transform = build_transforms(cfg, is_training=False)
    bs = cfg["data"]["eval_batch_size"] or 2 * cfg["data"]["batch_size"]
    loader = DataLoader(val, batch_size=int(bs), sampler=ShardedEvalSampler(val, world, rank), **_loader_kwargs(cfg))
    return classes, val, loader


def build_data(cfg: dict, root: str, rank: int, world: int) -> DataBundle:
    classes = check_train_val(root)
    seed = int(cfg["train"]["seed"])
    train = SeededTransformDataset(checked_image_folder(cfg, root, "train", rank), build_transforms(cfg, True), seed)
    bs = cfg["data"]["batch_size"]
    if len(train) < bs * world:
        raise DatasetError(f"{root}/train holds {len(train)} images, fewer than one global batch "
                           f"({bs} x {world} processes); lower data.batch_size")
    sampler = ResumableDistributedSampler(train, world, rank, seed=seed, shuffle=True, drop_last=True)
    # drop_last: Mixup needs even, equal batches, and every rank must take the same number of steps.
    train_loader = DataLoader(train, batch_size=bs, sampler=sampler, drop_last=True, **_loader_kwargs(cfg))
    _, val, val_loader = build_val_loader(cfg, root, rank, world)
    return DataBundle(classes, train, val, sampler, train_loader, val_loader)

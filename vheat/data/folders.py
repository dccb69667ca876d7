"""ImageFolder datasets (root/train, root/val) with clear errors for unusable trees."""
from __future__ import annotations

import logging
import os

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from .walk import SplitWalker

log = logging.getLogger("vheat.data")


class DatasetError(ValueError):
    """A dataset folder is missing, empty, inconsistent or holds an unreadable image."""


def _class_dirs(split_dir: str) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def check_split(root: str, split: str) -> list[str]:
    """Class names of ``root/split``; raises :class:`DatasetError` when it cannot be used."""
    split_dir = os.path.join(root, split)
    if not os.path.isdir(root):
        raise DatasetError(f"dataset root {root!r} does not exist (expected {root}/train/<class>/*.png "
                           f"and {root}/val/<class>/*.png, the ImageNet layout)")
    if not os.path.isdir(split_dir):
        raise DatasetError(f"dataset split folder {split_dir!r} is missing: the root must hold "
                           f"train/ and val/, each with one sub-folder per class")
    classes = _class_dirs(split_dir)
    if not classes:
        raise DatasetError(f"dataset split folder {split_dir!r} is empty: it needs one sub-folder per "
                           f"class holding images ({', '.join(IMG_EXTENSIONS[:4])}, ...)")
    walker = SplitWalker(split_dir, classes)
    empty = [c for c in classes if not walker.images(c)]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise DatasetError(f"class folder(s) without images in {split_dir!r}: {shown} "
                           f"(accepted extensions: {', '.join(IMG_EXTENSIONS)})")
    return classes


def check_train_val(root: str) -> list[str]:
    """Checks both splits and that they hold the same classes; returns the class names."""
    train = check_split(root, "train")
    val = check_split(root, "val")
    if train != val:
        only_train = sorted(set(train) - set(val))
        only_val = sorted(set(val) - set(train))
        raise DatasetError(
            f"class mismatch between {root}/train ({len(train)} classes) and {root}/val ({len(val)} classes): "
            f"only in train: {only_train[:5] or 'none'}; only in val: {only_val[:5] or 'none'}. "
            f"Labels are assigned by sorted class-folder name, so both splits need the same folders.")
    return train


class UnreadableImageError(DatasetError):
    """An image that does not decode, met while loading a batch (``data.verify_images=off``).

    A DataLoader worker hands its exception back as ``type(exc)("Caught ... in DataLoader worker process
    N.\nOriginal Traceback ...\nvheat.data.folders.UnreadableImageError: <message>")``: only the type
    and that text cross the process boundary, so the message is taken back from the text's last line
    and the user reads the one line the worker raised.
    """

    def __init__(self, message: str):
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rstrip().rsplit(marker, 1)[1]
        super().__init__(message)


def load_rgb(path: str) -> Image.Image:
    """PIL loader that names the file when an image cannot be decoded."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImageError(f"cannot read image {path} (corrupt or not an image): {exc}; "
                                   f"data.verify_images=fail (the default) lists every such file before "
                                   f"training") from None


class LinkSafeImageFolder(ImageFolder):
    """torchvision's ImageFolder listed by :class:`SplitWalker` (directory links cannot loop or relabel)."""

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        walker = SplitWalker(os.fspath(directory), sorted(class_to_idx))
        samples = [(path, class_to_idx[c]) for c in sorted(class_to_idx) for path in walker.images(c)]
        if walker.report():
            log.warning(walker.report())
        return samples


def image_folder(root: str, split: str) -> ImageFolder:
    return LinkSafeImageFolder(os.path.join(root, split), loader=load_rgb)

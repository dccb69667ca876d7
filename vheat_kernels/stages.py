"""vHeat's stage shapes: the one table every benchmark, check and test takes them from.

A vHeat model embeds 4 x 4 patches, then runs four stages; each stage halves the plane of
the one before and doubles its channels, and every block of a stage runs one HCO on an
(H, W, C) plane. The variants' depths and channels are the official configs
(vheat.models.MODEL_ARGS builds the models from them). vHeat-T and -S differ only in depth,
so their planes are the same and tables label them together ("T/S").

Plain integers, no imports: the kernel package, the models and tools/ all read it.
"""
from __future__ import annotations

from typing import NamedTuple


class Variant(NamedTuple):
    depths: tuple[int, ...]  # blocks per stage = HCO calls per stage in one forward pass
    dims: tuple[int, ...]  # channels per stage


VARIANTS = {
    "T": Variant(depths=(2, 2, 6, 2), dims=(96, 192, 384, 768)),
    "S": Variant(depths=(2, 2, 18, 2), dims=(96, 192, 384, 768)),
    "B": Variant(depths=(2, 2, 18, 2), dims=(128, 256, 512, 1024)),
}
# Variants with distinct planes, under the label the tables use.
FAMILIES = {"T/S": "T", "B": "B"}
PATCH = 4  # side of the patch embedding: stage 1's plane is the input over 4
CLASSIFICATION_SIZES = (224, 512, 1024)  # input sides the classification tables cover
DETECTION_INPUT = (800, 1333)  # Mask R-CNN's input (H, W)

Plane = tuple[int, int, int]  # (H, W, C)


def variant(name: str) -> Variant:
    """A variant by letter ("T", "S", "B") or family label ("T/S")."""
    return VARIANTS[FAMILIES.get(name, name)]


def stage_planes(name: str, img_size: int) -> list[Plane]:
    """(H, W, C) of each stage of a square ``img_size`` input (the model's ``res``)."""
    side = img_size // PATCH
    return [(side // 2**i, side // 2**i, dim) for i, dim in enumerate(variant(name).dims)]


def detection_planes(name: str) -> list[Plane]:
    """(H, W, C) of each stage at Mask R-CNN's 800 x 1333 input: the backbone pads to whole
    patches and rounds every halving up (200 x 334, 100 x 167, 50 x 84, 25 x 42)."""
    h, w = (-(-n // PATCH) for n in DETECTION_INPUT)
    out = []
    for dim in variant(name).dims:
        out.append((h, w, dim))
        h, w = -(-h // 2), -(-w // 2)
    return out


def stage_shapes(name: str, img_size: int, batch: int) -> list[tuple[int, int, int, int]]:
    """(B, H, W, C) of each stage: ``stage_planes`` with a batch."""
    return [(batch, *plane) for plane in stage_planes(name, img_size)]


# {label: [(H, W, C) per stage]}: every family at every classification size ("T/S@224"),
# then the detection planes ("det T/S").
PLANES: dict[str, list[Plane]] = {
    **{f"{fam}@{size}": stage_planes(fam, size) for size in CLASSIFICATION_SIZES for fam in FAMILIES},
    **{f"det {fam}": detection_planes(fam) for fam in FAMILIES},
}
# Sides of the classification planes at 224 (56, 28, 14, 7).
CLASSIFICATION_SIDES = tuple(H for H, _, _ in stage_planes("T", 224))

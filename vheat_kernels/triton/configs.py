"""Block configurations and on-chip limits of the fused HCO kernels (no triton import).

Two schedules (docs/triton.md). Register-resident: a program holds a whole (HP, WP) plane
for BC channels in registers, where HP and WP are
H and W rounded up to a power of two and at least 16 (the ``tl.dot`` minimum). How many
plane elements each thread may hold without register spills was measured with the
ahead-of-time compile check (tools/triton_resources.py, tests/test_backend_triton_compile.py:
``ptxas -v`` on sm_80 and sm_90); every configuration ``prune`` can return is inside those
limits, and the compile check fails if one ever spills. Streamed: planes with a side
above ``MAX_SIDE`` or without an entry in ``SPILL_FREE`` run as 1-D transforms along one
axis at a time (``streamed.py``), tiled by ``AxisConfig``; sides up to ``MAX_STREAMED_SIDE``.
"""
from __future__ import annotations

import functools
import json
from dataclasses import astuple, dataclass
from pathlib import Path

from .spill_tables import PLANE_SPILLED, SPILL_FREE

DOT_MIN = 16  # smallest M / N / K that tl.dot accepts
MAX_SIDE = 64  # largest padded H or W held on-chip
MAX_STREAMED_SIDE = 1024  # largest H or W of the streamed schedule (tested up to here)
PADDED_SIDES = (16, 32, 64)  # every HP / WP the kernels are compiled for

BLOCKS = (1, 2, 4, 8, 16, 32)  # channel blocks BC
WARPS = (4, 8)
MAX_CONFIGS = 4  # candidates per launch kept for tuning (gpu-check) and the compile check
# Plane elements per thread (HP * WP * BC / (32 * num_warps)) worth measuring: fewer leaves
# lanes idle, more always spilled in the sweep.
PER_THREAD = {"fwd": (4, 8, 16, 32), "bwd": (4, 8, 16)}

@dataclass(frozen=True)
class BlockConfig:
    BC: int
    num_warps: int


def padded(n: int) -> int:
    """Side length as held on-chip: next power of two, at least ``DOT_MIN``."""
    p = DOT_MIN
    while p < n:
        p *= 2
    return p


def per_thread(HP: int, WP: int, cfg: BlockConfig) -> float:
    return HP * WP * cfg.BC / (32 * cfg.num_warps)


def candidates(HP: int, WP: int, elem_bytes: int, backward: bool) -> list[BlockConfig]:
    """Configurations the resource sweep measures for one padded plane."""
    wanted = PER_THREAD["bwd" if backward else "fwd"]
    return [
        BlockConfig(bc, nw)
        for nw in WARPS
        for bc in BLOCKS
        if per_thread(HP, WP, BlockConfig(bc, nw)) in wanted
    ]


def _table_key(HP: int, WP: int, elem_bytes: int, backward: bool) -> tuple:
    # fp64 only runs in the interpreter, where any configuration works: use fp32's.
    return ("bwd" if backward else "fwd", min(elem_bytes, 4), HP, WP)


def fits(H: int, W: int, elem_bytes: int) -> bool:
    """Whether both kernels have a spill-free configuration for this plane and dtype size."""
    HP, WP = padded(H), padded(W)
    if HP > MAX_SIDE or WP > MAX_SIDE:
        return False
    return all(SPILL_FREE.get(_table_key(HP, WP, elem_bytes, bw)) for bw in (False, True))


# A register-resident pass runs only with a channel block of at least this many bytes per
# pixel: narrower blocks read channels-last rows in pieces of a 32-byte sector (BC = 1 in
# bf16 moves 16x the bytes it uses through L2), and the plane kernel reads 16-32 B.
MIN_COALESCED_BYTES = 16


def resident(H: int, W: int, elem_bytes: int, backward: bool) -> bool:
    """Whether one pass (forward, or the backward computing dE) of this plane and dtype size
    runs register-resident: a spill-free configuration exists and one of them is at least
    ``MIN_COALESCED_BYTES`` wide. Decided per pass: 28 x 28's forward qualifies in every
    dtype, its backward (BC <= 2) does not and takes the plane kernel."""
    HP, WP = padded(H), padded(W)
    if HP > MAX_SIDE or WP > MAX_SIDE:
        return False
    table = SPILL_FREE.get(_table_key(HP, WP, elem_bytes, backward), ())
    return any(bc * min(elem_bytes, 4) >= MIN_COALESCED_BYTES for bc, _ in table)


def max_side(elem_bytes: int) -> int:
    """Largest padded square side both kernels support for this dtype size."""
    return max((s for s in PADDED_SIDES if fits(s, s, elem_bytes)), default=0)


def prune(H: int, W: int, C: int, elem_bytes: int, backward: bool) -> list[BlockConfig]:
    """Spill-free configurations worth trying for this shape, best guess first.

    Drops channel blocks much wider than C (masked lanes; the narrowest always stays)
    and keeps the widest ``MAX_CONFIGS`` (wider blocks mean more coalesced channels-last
    loads). Empty only when ``fits`` is False.
    """
    table = SPILL_FREE.get(_table_key(padded(H), padded(W), elem_bytes, backward), ())
    configs = sorted((BlockConfig(bc, nw) for bc, nw in table), key=lambda c: (-c.BC, -c.num_warps))
    cap = _pow2_at_least(C)
    narrow = [c for c in configs if c.BC <= cap]
    if not narrow and configs:
        narrow = [c for c in configs if c.BC == configs[-1].BC]
    return narrow[:MAX_CONFIGS]


MAX_PLANE_SIDE = 64  # largest padded side of the single-launch plane kernels (plane.py)


@dataclass(frozen=True)
class PlaneConfig:
    """Tiles of the plane kernels (plane.py): BC channels per work item; the H passes take
    TW pixels per column tile, the W pass TH H-frequencies per row tile (both TW * BC and
    TH * BC columns per dot)."""

    BC: int
    TW: int
    TH: int
    BK: int
    num_warps: int


def plane_fits(H: int, W: int) -> bool:
    return padded(H) <= MAX_PLANE_SIDE and padded(W) <= MAX_PLANE_SIDE


def plane_usable(H: int, W: int, elem_bytes: int) -> bool:
    """Whether the plane kernels take this plane: sides up to 64 and a tile that spilled in
    none of them (fp32 at 32 x 32 has none: every tile spilled 8-104 B on sm_80 or sm_90)."""
    if not plane_fits(H, W):
        return False
    spilled = set(PLANE_SPILLED.get((min(elem_bytes, 4), padded(H), padded(W)), ()))
    every = plane_candidates(elem_bytes) + plane_candidates(elem_bytes, fallback=True)
    return any(astuple(c) not in spilled for c in every)


def resident_fits(H: int, W: int, elem_bytes: int, backward: bool) -> bool:
    """Whether one pass has any spill-free register-resident configuration (however narrow)."""
    HP, WP = padded(H), padded(W)
    return HP <= MAX_SIDE and WP <= MAX_SIDE and bool(SPILL_FREE.get(_table_key(HP, WP, elem_bytes, backward)))


# (BC, dot columns, warps), best guess first, per dot operand size. 16-bit: 16 channels
# = one 32-byte sector per pixel; fp32: 8 (32 B). Columns per dot: 64 at 8 warps, 32 at 4
# warps (a (64, cols) fp32 tile is 16 / thread then; tf32x3 holds hi / lo splits too).
# Every candidate returned for vHeat's shapes is built by the compile check (sm_80, sm_90).
PLANE_TILES = {
    2: ((16, 64, 32, 8), (8, 64, 32, 8), (16, 32, 32, 4), (8, 32, 32, 4)),
    4: ((8, 64, 16, 8), (8, 32, 16, 4), (4, 64, 16, 8), (4, 32, 16, 4)),
}


# 16-column tiles at 4 warps, used only where every PLANE_TILES candidate spilled: at
# 28 x 28 (padded 32 x 32) the wider tiles spilled 8-104 B (ptxas allocated 48-80
# registers there and still spilled). Of these, 16-bit (8, 16, 32, 4) is clean with Triton
# 3.8 but spills 8-16 B with Triton 3.6 (the GPU machine's), so a 16-bit 28 x 28 backward
# runs (4, 16, 16, 4): the one tile clean with both.
PLANE_FALLBACK_TILES = {
    2: ((8, 16, 32, 4), (16, 16, 32, 4), (4, 16, 32, 4), (4, 16, 16, 4)),
    4: ((8, 16, 16, 4), (4, 16, 16, 4)),
}


def plane_candidates(elem_bytes: int, fallback: bool = False) -> list[PlaneConfig]:
    """The tiles of PLANE_TILES (``fallback``: PLANE_FALLBACK_TILES) for a dot operand size
    (fp64, interpreter only: fp32's)."""
    table = (PLANE_FALLBACK_TILES if fallback else PLANE_TILES)[min(elem_bytes, 4)]
    return [PlaneConfig(bc, cols // bc, cols // bc, bk, warps) for bc, cols, bk, warps in table]


def plane_configs(H: int, W: int, C: int, elem_bytes: int) -> list[PlaneConfig]:
    """Tiles of the plane kernels for an H x W plane of C channels, best guess first:
    those that spilled in the sweep dropped (``PLANE_SPILLED``, either kernel), blocks much
    wider than C dropped (the narrowest left always stays)."""
    spilled = PLANE_SPILLED.get((min(elem_bytes, 4), padded(H), padded(W)), ())
    tiles = [c for c in plane_candidates(elem_bytes) if astuple(c) not in spilled]
    if not tiles:
        tiles = [c for c in plane_candidates(elem_bytes, fallback=True) if astuple(c) not in spilled]
    if not tiles:  # only when the plane schedule is forced: the routing never picks it (plane_usable)
        tiles = plane_candidates(elem_bytes, fallback=True)[:1]
    cap = _pow2_at_least(C)
    narrowest = min(c.BC for c in tiles)
    return [c for c in tiles if c.BC <= max(cap, narrowest)][:MAX_CONFIGS]


@dataclass(frozen=True)
class AxisConfig:
    """Tile of the streamed 1-D transform: BM outputs along the axis by TZ * BN columns
    (TZ rows of the batch-like axis times BN of the contiguous one), K-loop step BK."""

    BM: int
    BK: int
    TZ: int
    BN: int
    num_warps: int
    num_stages: int


# Best guess first, per dot operand size: (BM, BK, columns TZ * BN, warps, pipeline
# stages). fp32 dots run as tf32x3 (hi / lo operand splits), so fp32 tiles are smaller;
# candidates were measured with tools/triton_resources.py (no spills on sm_80 and
# sm_90 at 8 resident warps or more; (32, 16, 128, 4, 3) fp32 and (64, 32, 64, 4, 3)
# 16-bit spilled on some vHeat shapes and were dropped), and the compile check re-verifies
# every tile that ``axis_configs`` can return for vHeat's shapes.
AXIS_TILES = {
    4: ((64, 16, 128, 8, 2), (128, 16, 64, 8, 3), (32, 16, 64, 4, 3)),
    2: ((64, 16, 128, 8, 3), (32, 32, 128, 4, 3), (128, 32, 64, 8, 3)),
}
MAX_AXIS_CONFIGS = 4


def axis_configs(N: int, R: int, elem_bytes: int) -> list[AxisConfig]:
    """Tiles worth trying for a transform of length N over R contiguous columns, with dot
    operands of ``elem_bytes`` (fp64, interpreter only, uses fp32's).

    BM and BK shrink to the padded side (no all-masked rows); BN is R rounded up to a
    power of two, capped by the tile's columns, the rest of the columns go to TZ.
    """
    side = max(DOT_MIN, _pow2_at_least(N))
    out: list[AxisConfig] = []
    for bm, bk, cols, warps, stages in AXIS_TILES[min(elem_bytes, 4)]:
        bn = min(_pow2_at_least(R), cols)
        c = AxisConfig(min(bm, side), min(bk, side), cols // bn, bn, warps, stages)
        if c not in out:
            out.append(c)
    return out[:MAX_AXIS_CONFIGS]


MAX_LINE_SIDE = 64  # longest padded line the streamed schedule's middle pass holds on-chip
# Line elements per thread (NP * TZ * BN / (32 * num_warps)) of the line kernels: the
# register-resident kernels' measured range (PER_THREAD), the backward holding two lines.
LINE_PER_THREAD = {"fwd": (16, 8), "bwd": (4, 2)}
# Candidates of that rule that spilled in tools/triton_resources.py (sm_80 or sm_90):
# {(kernel, dtype bytes, NP): {(columns TZ * BN, num_warps), ...}}.
LINE_SPILLED = {
    ("fwd", 4, 64): {(32, 4), (64, 8), (32, 8)},
    ("fwd", 2, 64): {(32, 8)},
}


@dataclass(frozen=True)
class LineConfig:
    """Columns of the line kernels: TZ rows of the batch-like axis times BN contiguous."""

    TZ: int
    BN: int
    num_warps: int


def line_side(H: int, W: int) -> str | None:
    """The axis ("W" or "H") whose transforms the streamed schedule fuses on-chip, if any."""
    if padded(W) <= MAX_LINE_SIDE:
        return "W"
    if padded(H) <= MAX_LINE_SIDE:
        return "H"
    return None


def line_configs(N: int, R: int, backward: bool, elem_bytes: int) -> list[LineConfig]:
    """Column tiles of the line kernels for lines of length N over R contiguous columns."""
    NP = padded(N)
    kernel = "bwd" if backward else "fwd"
    spilled = LINE_SPILLED.get((kernel, min(elem_bytes, 4), NP), set())
    out: list[LineConfig] = []
    for per in LINE_PER_THREAD[kernel]:
        for warps in WARPS:
            cols = per * 32 * warps // NP
            if cols < DOT_MIN or cols > 256 or (cols, warps) in spilled:
                continue
            bn = min(_pow2_at_least(R), cols)
            c = LineConfig(cols // bn, bn, warps)
            if c not in out:
                out.append(c)
    return out[:MAX_CONFIGS]


# --- the configuration a launch runs ---------------------------------------------------
#
# No kernel is autotuned at run time: a first call per shape would cost seconds of timing,
# CUDA-graph capture would break, and a tuner launches each candidate on the live
# arguments, which an in-place kernel overwrites. Each launch runs ``choose``'s pick: an
# entry of ``TUNED_FILE`` measured on that GPU architecture, else the planner's first
# candidate, which is also what the interpreter tests run and what the quick compile check
# builds. `make gpu-check` times every candidate on copies of the arguments and writes
# tuned_configs.json into its results; copying that file here adopts its entries.
TUNED_FILE = Path(__file__).with_name("tuned_configs.json")


def tuned_key(kernel: str, shape: tuple, elem_bytes: int, arch: int) -> str:
    """Key of ``TUNED_FILE``: kernel, the launch's integer arguments and flags, dtype size, sm."""
    return f"{kernel} {','.join(map(str, shape))} {elem_bytes}B sm_{arch}"


@functools.lru_cache(maxsize=1)
def tuned_table() -> dict[str, tuple]:
    """{tuned_key: configuration fields}; empty when the file is missing."""
    try:
        entries = json.loads(TUNED_FILE.read_text())
    except FileNotFoundError:
        return {}
    return {k: tuple(v) for k, v in entries.items()}


def choose(candidates: list, key: str | None):
    """The candidate a launch runs: the table's entry for ``key`` when it is still one of
    the candidates (a stale entry is ignored), else the first candidate."""
    wanted = tuned_table().get(key) if key is not None else None
    for c in candidates:
        if wanted is not None and astuple(c) == wanted:
            return c
    return candidates[0]


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p

"""Block configurations and on-chip limits of the fused HCO kernels (no triton import).

A program holds a whole (HP, WP) plane for BC channels in registers, where HP and WP are
H and W rounded up to a power of two and at least 16 (the ``tl.dot`` minimum). How many
plane elements each thread may hold without register spills was measured with the
ahead-of-time compile check (benchmarks/triton_resources.py, tests/test_triton_compile.py:
``ptxas -v`` on sm_80 and sm_90); every configuration ``prune`` can return is inside those
limits, and the compile check fails if one ever spills. Planes with a side above
``MAX_SIDE`` are refused with a reason (``auto`` then takes the fft backend).
"""
from __future__ import annotations

from dataclasses import dataclass

DOT_MIN = 16  # smallest M / N / K that tl.dot accepts
MAX_SIDE = 64  # largest padded H or W held on-chip
PADDED_SIDES = (16, 32, 64)  # every HP / WP the kernels are compiled for

BLOCKS = (1, 2, 4, 8, 16, 32)  # channel blocks BC
WARPS = (4, 8)
MAX_CONFIGS = 4  # autotune over at most this many per shape

# Plane elements per thread (HP * WP * BC / (32 * num_warps)) that compile without spills,
# per kernel and element size in bytes of the dot operands. The backward holds three
# planes (dE accumulator, DCT2(dy), DCT2(x)); fp32 dots run as tf32x3 (hi / lo splits).
MAX_PER_THREAD = {
    ("fwd", 2): 32,
    ("fwd", 4): 16,
    ("fwd", 8): 16,
    ("bwd", 2): 16,
    ("bwd", 4): 16,
    ("bwd", 8): 8,
}
MIN_PER_THREAD = 4  # below this a config only adds launches and idle lanes


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


def fits(H: int, W: int) -> bool:
    return padded(H) <= MAX_SIDE and padded(W) <= MAX_SIDE


def per_thread(HP: int, WP: int, cfg: BlockConfig) -> float:
    return HP * WP * cfg.BC / (32 * cfg.num_warps)


def prune(H: int, W: int, C: int, elem_bytes: int, backward: bool) -> list[BlockConfig]:
    """Configurations worth trying for this shape, best guess first; never empty if ``fits``.

    Keeps tiles inside the spill-free budget, drops channel blocks far wider than C
    (masked lanes) and tiles too small to keep a thread busy, then keeps the widest
    ``MAX_CONFIGS`` (wider blocks mean more coalesced channels-last loads).
    """
    HP, WP = padded(H), padded(W)
    limit = MAX_PER_THREAD[("bwd" if backward else "fwd", elem_bytes)]
    c_cap = max(1, _pow2_at_least(C))
    ok = [
        BlockConfig(bc, nw)
        for bc in BLOCKS
        for nw in WARPS
        if bc <= c_cap and per_thread(HP, WP, BlockConfig(bc, nw)) <= limit
    ]
    busy = [c for c in ok if per_thread(HP, WP, c) >= MIN_PER_THREAD]
    ok = busy or ok or [BlockConfig(1, WARPS[-1])]
    ok.sort(key=lambda c: (-c.BC, -per_thread(HP, WP, c)))
    return ok[:MAX_CONFIGS]


def all_configs(elem_bytes: int, backward: bool) -> list[tuple[int, int, BlockConfig]]:
    """Every (HP, WP, config) some shape can run: what the compile check builds."""
    out = []
    for HP in PADDED_SIDES:
        for WP in PADDED_SIDES:
            seen = set()
            for C in (1, 2, 4, 8, 16, 32, 64, 1024):
                for cfg in prune(HP, WP, C, elem_bytes, backward):
                    if cfg not in seen:
                        seen.add(cfg)
                        out.append((HP, WP, cfg))
    return out


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p

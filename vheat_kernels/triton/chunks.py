"""Batch chunking of the fused backward (pure arithmetic; shared with benchmarks/bytes_model.py)."""
from __future__ import annotations

import math

def backward_chunks(B: int, C: int, programs_wanted: int, block: int) -> int:
    """Number of batch chunks, each summed into its own fp32 dE partial.

    Enough (channel block, chunk) programs to fill the GPU, but no more chunks than
    needed: each one costs a partial write and read. Independent of the chosen
    block so the partial buffer can be sized before launch, and fixed per shape and
    device, so the reduction order (and dE, bit for bit) is too. ``block`` is the widest
    channel block any candidate configuration may use for this shape (programs per
    chunk >= C / block).
    """
    per_chunk = max(1, math.ceil(C / block))
    chunks = max(1, min(B, 65535, math.ceil(programs_wanted / per_chunk)))  # 65535: CUDA's grid.y limit
    per_prog = math.ceil(B / chunks)
    return math.ceil(B / per_prog)


def wave_chunks(B: int, blocks: int, wave: int, max_waves: int = 4) -> int:
    """Batch chunks of the plane backward: the fewest chunks whose (blocks x chunks)
    programs fill whole waves to at least 90 % (``wave``: 132 SMs of an H100, a constant,
    so dE's summation order is the same on every GPU), within ``max_waves`` (each chunk
    costs a partial write and read); else the best fill found there; fewer when B is
    small. Each chunk walks ceil(B / chunks) elements, the last one possibly fewer."""
    if B <= 0:
        return 1
    blocks = max(blocks, 1)
    best, best_fill = 1, 0.0
    for wanted in range(1, max(1, min(B, 65535)) + 1):
        chunks = math.ceil(B / math.ceil(B / wanted))  # every chunk walks ceil(B / chunks) elements
        programs = blocks * chunks
        if chunks > 1 and programs > max_waves * wave:
            break
        fill = programs / (math.ceil(programs / wave) * wave)
        if fill > best_fill:
            best, best_fill = chunks, fill
        if fill >= 0.9:
            break
    return best

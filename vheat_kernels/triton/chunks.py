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


def wave_chunks(B: int, blocks: int, wave: int) -> int:
    """Batch chunks of the plane backward: (blocks x chunks) programs fill at most one
    ``wave`` (132 SMs of an H100: a constant, so dE's summation order is the same on every
    GPU), as many as fit; fewer when B is small. Each chunk walks ceil(B / chunks)
    elements, the last one possibly fewer."""
    chunks = max(1, min(B, 65535, wave // max(blocks, 1)))
    per_prog = math.ceil(B / chunks)
    return math.ceil(B / per_prog)

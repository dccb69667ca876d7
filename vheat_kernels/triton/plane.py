"""Single-launch Triton kernels of the HCO for planes the register-resident kernels cannot hold.

Planes with padded sides up to 64 (vHeat's 56 x 56 stage in every dtype, 28 x 28 where the
register-resident backward only fits one channel per program) are transformed in one
launch each way. Triton gives no explicit shared memory, so each program stages its plane
in its own slot of a global scratch buffer: slot sizes times the program count keep the
scratch L2-resident, so HBM sees one read of x (and dy) and one write of y (dx), plus E.

A work item is (batch element, block of BC channels). Per item:

1. H transform in column tiles: T[:, w-tile] = C_H @ X[:, w-tile]  (x read once, BC
   contiguous channels per pixel) -> slot, laid out (n, w, c);
2. per tile of TH H-frequencies, the whole W line on-chip: DCT along W, times E, inverse
   DCT along W, slot -> slot (the tile is loaded in (w, n, c) order through its addresses,
   so no register transpose is needed);
3. y[:, w-tile] = C_H^T @ S[:, w-tile] -> y.

``tl.debug_barrier()`` (bar.sync: the program's global writes become visible to its
threads) separates the phases and precedes every in-place store. Dots follow kernels.py's
precision rules (``_apply``: operands rounded to the input dtype, fp32 as tf32x3, the
interpreter's tf32x3 / bf16 emulation), and the slot holds each intermediate in the input
dtype, which is exactly what the next dot rounds it to.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .kernels import _apply, _cos, _round


@triton.jit
def _h_pass(src_ptr, src_base, S_SH, S_SW, ch_ptr, slot_ptr, H, W, C, c0, valid,
            HP: tl.constexpr, BC: tl.constexpr, TW: tl.constexpr, TRANSPOSE: tl.constexpr,
            ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """slot (n, w, c) = C_H (or C_H^T) @ src along H, in tiles of TW pixels; src addressed
    src_base + h * S_SH + w * S_SW + c0 + c (channel stride 1)."""
    h = tl.arange(0, HP)[:, None, None]
    c = tl.arange(0, BC)[None, None, :]
    mat = _cos(ch_ptr, H, HP, TRANSPOSE, ROUND_DTYPE, DOT_DTYPE)
    for w0 in range(0, W, TW):
        w = w0 + tl.arange(0, TW)[None, :, None]
        ok = (h < H) & (w < W)
        tile = tl.load(src_ptr + src_base + h * S_SH + w * S_SW + c0 + c, mask=ok & (c0 + c < C) & valid, other=0.0)
        t = _apply(mat, tl.reshape(tile, (HP, TW * BC)), ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        t = _round(tl.reshape(t, (HP, TW, BC)), ROUND_DTYPE, DOT_DTYPE)
        tl.store(slot_ptr + (h * W + w) * BC + c, t.to(slot_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _h_inverse_store(slot_ptr, ch_ptr, dst_ptr, dst_base, H, W, C, c0, valid,
                     HP: tl.constexpr, BC: tl.constexpr, TW: tl.constexpr,
                     ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                     PRECISION: tl.constexpr):
    """dst (contiguous (H, W, C) plane at dst_base) = C_H^T @ slot along H, in TW-pixel tiles."""
    h = tl.arange(0, HP)[:, None, None]
    c = tl.arange(0, BC)[None, None, :]
    mat = _cos(ch_ptr, H, HP, True, ROUND_DTYPE, DOT_DTYPE)
    for w0 in range(0, W, TW):
        w = w0 + tl.arange(0, TW)[None, :, None]
        ok = (h < H) & (w < W)
        tile = tl.load(slot_ptr + (h * W + w) * BC + c, mask=ok, other=0.0)
        y = _apply(mat, tl.reshape(tile, (HP, TW * BC)), ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        y = _round(tl.reshape(y, (HP, TW, BC)), ROUND_DTYPE, DOT_DTYPE)
        tl.store(dst_ptr + dst_base + (h * W + w) * C + c0 + c, y.to(dst_ptr.dtype.element_ty),
                 mask=ok & (c0 + c < C) & valid)


@triton.jit
def _w_tile(n0, H, W, WP: tl.constexpr, TH: tl.constexpr, BC: tl.constexpr):
    """Slot offsets (w, n, c) of the rows n0 .. n0 + TH, whole W lines, and their mask."""
    w = tl.arange(0, WP)[:, None, None]
    n = n0 + tl.arange(0, TH)[None, :, None]
    c = tl.arange(0, BC)[None, None, :]
    return (n * W + w) * BC + c, (w < W) & (n < H) & (c < BC)


@triton.jit
def _e_tile(e_ptr, n0, H, W, C, c0, WP: tl.constexpr, TH: tl.constexpr, BC: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """E[n, m, c0 + c] for the rows n0 .. n0 + TH as (m, TH * BC), zero outside."""
    m = tl.arange(0, WP)[:, None, None]
    n = n0 + tl.arange(0, TH)[None, :, None]
    c = c0 + tl.arange(0, BC)[None, None, :]
    e = tl.load(e_ptr + (n * W + m) * C + c, mask=(m < W) & (n < H) & (c < C), other=0.0)
    return tl.reshape(e.to(ACC_DTYPE), (WP, TH * BC))


@triton.jit
def hco_plane_kernel(x_ptr, e_ptr, ch_ptr, cw_ptr, y_ptr, s_ptr, B, H, W, C, X_SB, X_SH, X_SW, PROGRAMS,
                     HP: tl.constexpr, WP: tl.constexpr, BC: tl.constexpr, TW: tl.constexpr, TH: tl.constexpr,
                     ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                     PRECISION: tl.constexpr):
    """y[b] = IDCT2(DCT2(x[b]) * E): PROGRAMS persistent programs walk the work items
    (b, channel block), channel block fastest, each through its own slot of s_ptr
    (H * W * BC elements). x is read through strides (X_SB, X_SH, X_SW, 1); y is contiguous."""
    pid = tl.program_id(0)
    blocks = (C + BC - 1) // BC
    slot_ptr = s_ptr + pid.to(tl.int64) * H * W * BC
    for item in range(pid, B * blocks, PROGRAMS):
        c0 = (item % blocks) * BC
        b = (item // blocks).to(tl.int64)
        _h_pass(x_ptr, b * X_SB, X_SH, X_SW, ch_ptr, slot_ptr, H, W, C, c0, True, HP, BC, TW, False,
                ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        tl.debug_barrier()
        for n0 in range(0, H, TH):
            offs, ok = _w_tile(n0, H, W, WP, TH, BC)
            t = tl.reshape(tl.load(slot_ptr + offs, mask=ok, other=0.0), (WP, TH * BC))
            f = _apply(_cos(cw_ptr, W, WP, False, ROUND_DTYPE, DOT_DTYPE), t, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE,
                       PRECISION)
            f = f * _e_tile(e_ptr, n0, H, W, C, c0, WP, TH, BC, ACC_DTYPE)
            s = _apply(_cos(cw_ptr, W, WP, True, ROUND_DTYPE, DOT_DTYPE), f, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE,
                       PRECISION)
            s = _round(tl.reshape(s, (WP, TH, BC)), ROUND_DTYPE, DOT_DTYPE)
            tl.debug_barrier()  # every thread has read the tile before it is overwritten
            tl.store(slot_ptr + offs, s.to(s_ptr.dtype.element_ty), mask=ok)
        tl.debug_barrier()
        _h_inverse_store(slot_ptr, ch_ptr, y_ptr, b * H * W * C, H, W, C, c0, True, HP, BC, TW,
                         ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        tl.debug_barrier()  # the slot is free for the next item


# B_PER_PROG not specialised (as hco_bwd_kernel): 1 would unroll the batch loop.
@triton.jit(do_not_specialize=["B_PER_PROG"])
def hco_plane_bwd_kernel(x_ptr, dy_ptr, e_ptr, ch_ptr, cw_ptr, dx_ptr, de_ptr, s_ptr, B, H, W, C,
                         X_SB, X_SH, X_SW, G_SB, G_SH, G_SW, B_PER_PROG,
                         HP: tl.constexpr, WP: tl.constexpr, BC: tl.constexpr, TW: tl.constexpr, TH: tl.constexpr,
                         NEED_DX: tl.constexpr, ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
                         ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """Launch 1 of the plane backward: program (channel block, chunk) walks the batch
    elements chunk * B_PER_PROG ... in order; per element g = DCT2(dy), dx = IDCT2(g * E)
    (NEED_DX) and de[chunk] += g * DCT2(x), the chunk's fp32 partial (H, W, C) accumulated
    in place (only this program touches its columns; the first element stores, so a
    repeated launch gives the same bits). Two slots per program: dy's H transform (then
    dx's inverse W transform) and x's. dy and x are read through strides; dx is contiguous.
    """
    cb = tl.program_id(0)
    chunk = tl.program_id(1)
    c0 = cb * BC
    slots = tl.num_programs(0).to(tl.int64) * chunk + cb
    g_slot = s_ptr + slots * 2 * H * W * BC
    x_slot = g_slot + H * W * BC
    de_base = chunk.to(tl.int64) * H * W * C
    for i in range(0, B_PER_PROG):
        b = chunk * B_PER_PROG + i
        valid = b < B
        b64 = b.to(tl.int64)
        _h_pass(dy_ptr, b64 * G_SB, G_SH, G_SW, ch_ptr, g_slot, H, W, C, c0, valid, HP, BC, TW, False,
                ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        _h_pass(x_ptr, b64 * X_SB, X_SH, X_SW, ch_ptr, x_slot, H, W, C, c0, valid, HP, BC, TW, False,
                ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        tl.debug_barrier()
        for n0 in range(0, H, TH):
            offs, ok = _w_tile(n0, H, W, WP, TH, BC)
            g = tl.reshape(tl.load(g_slot + offs, mask=ok, other=0.0), (WP, TH * BC))
            g = _apply(_cos(cw_ptr, W, WP, False, ROUND_DTYPE, DOT_DTYPE), g, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE,
                       PRECISION)
            xf = tl.reshape(tl.load(x_slot + offs, mask=ok, other=0.0), (WP, TH * BC))
            xf = _apply(_cos(cw_ptr, W, WP, False, ROUND_DTYPE, DOT_DTYPE), xf, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE,
                        PRECISION)
            # de[chunk, n, m, c]: the partial in E's layout, (m, n, c) order like the tile.
            m = tl.arange(0, WP)[:, None, None]
            n = n0 + tl.arange(0, TH)[None, :, None]
            c = c0 + tl.arange(0, BC)[None, None, :]
            d_offs = de_base + (n * W + m) * C + c
            d_ok = (m < W) & (n < H) & (c < C)
            prev = tl.load(de_ptr + d_offs, mask=d_ok & (i > 0), other=0.0)
            tl.store(de_ptr + d_offs, prev + tl.reshape(g * xf, (WP, TH, BC)), mask=d_ok)
            if NEED_DX:
                s = g * _e_tile(e_ptr, n0, H, W, C, c0, WP, TH, BC, ACC_DTYPE)
                s = _apply(_cos(cw_ptr, W, WP, True, ROUND_DTYPE, DOT_DTYPE), s, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE,
                           PRECISION)
                s = _round(tl.reshape(s, (WP, TH, BC)), ROUND_DTYPE, DOT_DTYPE)
                tl.debug_barrier()  # every thread has read the tile before it is overwritten
                tl.store(g_slot + offs, s.to(s_ptr.dtype.element_ty), mask=ok)
        tl.debug_barrier()
        if NEED_DX:
            _h_inverse_store(g_slot, ch_ptr, dx_ptr, b64 * H * W * C, H, W, C, c0, valid, HP, BC, TW,
                             ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
            tl.debug_barrier()  # the slots are free for the next element


@triton.jit
def hco_de_sum_kernel(part_ptr, de_ptr, CHUNKS, P, BLOCK: tl.constexpr, ROUND_DTYPE: tl.constexpr,
                      ROUND_TO: tl.constexpr):
    """Launch 2 of the fused backward: de[p] = sum over the chunk partials part[k, p], k in
    order (deterministic, no atomics), written in E's dtype (``ROUND_DTYPE``, rounded to
    nearest even; ``ROUND_TO`` as in kernels._round for the interpreter's bf16)."""
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = p < P
    ptrs = part_ptr + p
    acc = tl.load(ptrs, mask=ok, other=0.0)
    for _ in range(1, CHUNKS):
        ptrs += P
        acc += tl.load(ptrs, mask=ok, other=0.0)
    tl.store(de_ptr + p, _round(acc, ROUND_DTYPE, ROUND_TO).to(de_ptr.dtype.element_ty), mask=ok)

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

from .kernels import _mma, _round


@triton.jit
def _transform(mat_ptr, N, NP: tl.constexpr, TRANSPOSE: tl.constexpr, src_ptr, ROW_STRIDE, cols, cols_ok,
               BK: tl.constexpr, COLS: tl.constexpr, ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
               ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """(NP, COLS) = M (or M^T) @ src along N, src[k, j] at src_ptr + k * ROW_STRIDE + cols[j].

    K-looped in BK-row steps with both operands loaded from memory (L1 / L2): a 64-long
    contraction held whole in registers spilled in fp32 (tf32x3 keeps hi / lo splits of
    both operands) and in bf16 on sm_80; the loop holds one (NP, BK) matrix slice and one
    (BK, COLS) source slice next to the accumulator.
    """
    r = tl.arange(0, NP)[:, None]
    acc = tl.full((NP, COLS), 0, dtype=ACC_DTYPE)
    for k0 in range(0, N, BK):
        k = k0 + tl.arange(0, BK)
        if TRANSPOSE:
            m_offs = k[None, :] * N + r
        else:
            m_offs = r * N + k[None, :]
        m = tl.load(mat_ptr + m_offs, mask=(r < N) & (k[None, :] < N), other=0.0)
        s = tl.load(src_ptr + k[:, None] * ROW_STRIDE + cols[None, :], mask=(k[:, None] < N) & cols_ok[None, :],
                    other=0.0)
        acc = _mma(_round(m, ROUND_DTYPE, DOT_DTYPE), _round(s, ROUND_DTYPE, DOT_DTYPE), acc, PRECISION)
    return acc


@triton.jit
def _h_pass(src_ptr, src_base, S_SH, S_SW, ch_ptr, slot_ptr, H, W, C, c0, valid,
            HP: tl.constexpr, BC: tl.constexpr, TW: tl.constexpr, BK: tl.constexpr,
            ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """slot (n, w, c) = C_H @ src along H, in tiles of TW pixels; src (h, w, c) addressed
    src_base + h * S_SH + w * S_SW + c0 + c (channel stride 1)."""
    h = tl.arange(0, HP)[:, None, None]
    c = tl.arange(0, BC)[None, :]
    for w0 in range(0, W, TW):
        w = w0 + tl.arange(0, TW)[:, None]
        cols = tl.reshape(w * S_SW + c0 + c, (TW * BC,))
        cols_ok = tl.reshape((w < W) & (c0 + c < C) & valid, (TW * BC,))
        t = _transform(ch_ptr, H, HP, False, src_ptr + src_base, S_SH, cols, cols_ok, BK, TW * BC,
                       ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        t = _round(tl.reshape(t, (HP, TW, BC)), ROUND_DTYPE, DOT_DTYPE)
        w3 = w[None, :, :]
        tl.store(slot_ptr + (h * W + w3) * BC + c[None, :, :], t.to(slot_ptr.dtype.element_ty),
                 mask=(h < H) & (w3 < W))


@triton.jit
def _h_inverse_store(slot_ptr, ch_ptr, dst_ptr, dst_base, H, W, C, c0, valid,
                     HP: tl.constexpr, BC: tl.constexpr, TW: tl.constexpr, BK: tl.constexpr,
                     ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                     PRECISION: tl.constexpr):
    """dst (contiguous (H, W, C) plane at dst_base) = C_H^T @ slot along H, in TW-pixel tiles."""
    h = tl.arange(0, HP)[:, None, None]
    c = tl.arange(0, BC)[None, :]
    for w0 in range(0, W, TW):
        w = w0 + tl.arange(0, TW)[:, None]
        cols = tl.reshape(w * BC + c, (TW * BC,))
        cols_ok = tl.reshape((w < W) & (c < BC), (TW * BC,))
        y = _transform(ch_ptr, H, HP, True, slot_ptr, W * BC, cols, cols_ok, BK, TW * BC,
                       ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        y = _round(tl.reshape(y, (HP, TW, BC)), ROUND_DTYPE, DOT_DTYPE)
        w3 = w[None, :, :]
        c3 = c0 + c[None, :, :]
        tl.store(dst_ptr + dst_base + (h * W + w3) * C + c3, y.to(dst_ptr.dtype.element_ty),
                 mask=(h < H) & (w3 < W) & (c3 < C) & valid)


@triton.jit
def _w_cols(n0, H, TH: tl.constexpr, BC: tl.constexpr, W):
    """Slot columns (n, c) of the rows n0 .. n0 + TH for a transform along W (row stride BC)."""
    n = n0 + tl.arange(0, TH)[:, None]
    c = tl.arange(0, BC)[None, :]
    return tl.reshape(n * W * BC + c, (TH * BC,)), tl.reshape((n < H) & (c < BC), (TH * BC,))


@triton.jit
def _w_transform(slot_ptr, cw_ptr, n0, H, W, WP: tl.constexpr, TH: tl.constexpr, BC: tl.constexpr,
                 TRANSPOSE: tl.constexpr, BK: tl.constexpr, ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
                 ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """(WP, TH * BC): C_W (or C_W^T) @ the slot's rows n0 .. n0 + TH along W."""
    cols, cols_ok = _w_cols(n0, H, TH, BC, W)
    return _transform(cw_ptr, W, WP, TRANSPOSE, slot_ptr, BC, cols, cols_ok, BK, TH * BC,
                      ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)


@triton.jit
def _w_dct(slot_ptr, cw_ptr, n0, H, W, WP: tl.constexpr, TH: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
           ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """(WP, TH * BC): C_W @ the slot's rows n0 .. n0 + TH along W (the forward transform)."""
    return _w_transform(slot_ptr, cw_ptr, n0, H, W, WP, TH, BC, False, BK, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE,
                        PRECISION)


@triton.jit
def _w_store(slot_ptr, v, n0, H, W, WP: tl.constexpr, TH: tl.constexpr, BC: tl.constexpr,
             ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr):
    """Rows n0 .. n0 + TH of the slot = v (WP, TH * BC) in (w, n, c) order, rounded to the input dtype."""
    w = tl.arange(0, WP)[:, None]
    cols, cols_ok = _w_cols(n0, H, TH, BC, W)
    v = _round(v, ROUND_DTYPE, DOT_DTYPE)
    tl.store(slot_ptr + w * BC + cols[None, :], v.to(slot_ptr.dtype.element_ty), mask=(w < W) & cols_ok[None, :])


@triton.jit
def _e_tile(e_ptr, n0, H, W, C, c0, WP: tl.constexpr, TH: tl.constexpr, BC: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """E[n, m, c0 + c] for the rows n0 .. n0 + TH as (m, TH * BC), zero outside."""
    m = tl.arange(0, WP)[:, None, None]
    n = n0 + tl.arange(0, TH)[None, :, None]
    c = c0 + tl.arange(0, BC)[None, None, :]
    e = tl.load(e_ptr + (n * W + m) * C + c, mask=(m < W) & (n < H) & (c < C), other=0.0)
    return tl.reshape(e.to(ACC_DTYPE), (WP, TH * BC))


@triton.jit
def _w_scale_inverse(slot_ptr, f, e_ptr, cw_ptr, n0, H, W, C, c0, WP: tl.constexpr, TH: tl.constexpr,
                     BC: tl.constexpr, BK: tl.constexpr, ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
                     ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """Rows n0 .. n0 + TH of the slot = C_W^T (f * E) along W, f (WP, TH * BC) being their transform."""
    f = f * _e_tile(e_ptr, n0, H, W, C, c0, WP, TH, BC, ACC_DTYPE)
    tl.debug_barrier()  # every thread has read the rows before they are overwritten
    _w_store(slot_ptr, f, n0, H, W, WP, TH, BC, ROUND_DTYPE, DOT_DTYPE)
    tl.debug_barrier()
    s = _w_transform(slot_ptr, cw_ptr, n0, H, W, WP, TH, BC, True, BK, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE,
                     PRECISION)
    tl.debug_barrier()
    _w_store(slot_ptr, s, n0, H, W, WP, TH, BC, ROUND_DTYPE, DOT_DTYPE)


@triton.jit
def hco_plane_kernel(x_ptr, e_ptr, ch_ptr, cw_ptr, y_ptr, s_ptr, B, H, W, C, X_SB, X_SH, X_SW, PROGRAMS,
                     HP: tl.constexpr, WP: tl.constexpr, BC: tl.constexpr, TW: tl.constexpr, TH: tl.constexpr,
                     BK: tl.constexpr, ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr,
                     ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """y[b] = IDCT2(DCT2(x[b]) * E): PROGRAMS persistent programs walk the work items
    (b, channel block), channel block fastest, each through its own slot of s_ptr
    (H * W * BC elements). x is read through strides (X_SB, X_SH, X_SW, 1); y is contiguous."""
    pid = tl.program_id(0)
    blocks = (C + BC - 1) // BC
    slot = s_ptr + pid.to(tl.int64) * H * W * BC
    for item in range(pid, B * blocks, PROGRAMS):
        c0 = (item % blocks) * BC
        b = (item // blocks).to(tl.int64)
        _h_pass(x_ptr, b * X_SB, X_SH, X_SW, ch_ptr, slot, H, W, C, c0, True, HP, BC, TW, BK,
                ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        tl.debug_barrier()
        for n0 in range(0, H, TH):
            f = _w_dct(slot, cw_ptr, n0, H, W, WP, TH, BC, BK, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
            _w_scale_inverse(slot, f, e_ptr, cw_ptr, n0, H, W, C, c0, WP, TH, BC, BK, ROUND_DTYPE, DOT_DTYPE,
                             ACC_DTYPE, PRECISION)
        tl.debug_barrier()
        _h_inverse_store(slot, ch_ptr, y_ptr, b * H * W * C, H, W, C, c0, True, HP, BC, TW, BK,
                         ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        tl.debug_barrier()  # the slot is free for the next item


# B_PER_PROG not specialised (as hco_bwd_kernel): 1 would unroll the batch loop.
@triton.jit(do_not_specialize=["B_PER_PROG"])
def hco_plane_bwd_kernel(x_ptr, dy_ptr, e_ptr, ch_ptr, cw_ptr, dx_ptr, de_ptr, s_ptr, B, H, W, C,
                         X_SB, X_SH, X_SW, G_SB, G_SH, G_SW, B_PER_PROG,
                         HP: tl.constexpr, WP: tl.constexpr, BC: tl.constexpr, TW: tl.constexpr, TH: tl.constexpr,
                         BK: tl.constexpr, NEED_DX: tl.constexpr, ROUND_DTYPE: tl.constexpr,
                         DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """Launch 1 of the plane backward: program (channel block, chunk) walks the batch
    elements chunk * B_PER_PROG ... in order; per element g = DCT2(dy), dx = IDCT2(g * E)
    (NEED_DX) and de[chunk] += g * DCT2(x), the chunk's fp32 partial (H, W, C) accumulated
    in place (only this program touches its columns; the first element stores, so a
    repeated launch gives the same bits). Two slots per program: dy's transforms (then
    dx's) and x's. dy and x are read through strides; dx is contiguous.
    """
    cb = tl.program_id(0)
    chunk = tl.program_id(1)
    c0 = cb * BC
    g_slot = s_ptr + (tl.num_programs(0).to(tl.int64) * chunk + cb) * 2 * H * W * BC
    x_slot = g_slot + H * W * BC
    de_base = chunk.to(tl.int64) * H * W * C
    m = tl.arange(0, WP)[:, None, None]
    c = c0 + tl.arange(0, BC)[None, None, :]
    for i in range(0, B_PER_PROG):
        b = chunk * B_PER_PROG + i
        valid = b < B
        b64 = b.to(tl.int64)
        _h_pass(dy_ptr, b64 * G_SB, G_SH, G_SW, ch_ptr, g_slot, H, W, C, c0, valid, HP, BC, TW, BK,
                ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        _h_pass(x_ptr, b64 * X_SB, X_SH, X_SW, ch_ptr, x_slot, H, W, C, c0, valid, HP, BC, TW, BK,
                ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        tl.debug_barrier()
        for n0 in range(0, H, TH):
            g = _w_dct(g_slot, cw_ptr, n0, H, W, WP, TH, BC, BK, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
            xf = _w_dct(x_slot, cw_ptr, n0, H, W, WP, TH, BC, BK, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
            # de[chunk, n, m, c]: the partial in E's layout, visited in the tile's (m, n, c) order.
            n = n0 + tl.arange(0, TH)[None, :, None]
            d_offs = de_base + (n * W + m) * C + c
            d_ok = (m < W) & (n < H) & (c < C)
            prev = tl.load(de_ptr + d_offs, mask=d_ok & (i > 0), other=0.0)
            tl.store(de_ptr + d_offs, prev + tl.reshape(g * xf, (WP, TH, BC)), mask=d_ok)
            if NEED_DX:
                _w_scale_inverse(g_slot, g, e_ptr, cw_ptr, n0, H, W, C, c0, WP, TH, BC, BK, ROUND_DTYPE, DOT_DTYPE,
                                 ACC_DTYPE, PRECISION)
        tl.debug_barrier()
        if NEED_DX:
            _h_inverse_store(g_slot, ch_ptr, dx_ptr, b64 * H * W * C, H, W, C, c0, valid, HP, BC, TW, BK,
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

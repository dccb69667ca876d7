"""Streamed Triton kernels of the HCO for planes too large to hold on-chip (see docs/triton.md).

A 2-D DCT is two 1-D transforms; each one here is a tiled matrix product along one axis
of a contiguous (Z, N, R) view of a channels-last tensor, with the cosine matrix streamed
in (BM, BK) tiles through a K-loop over ``tl.dot``:

- along H: (Z, N, R) = (B, H, W * C)
- along W: (Z, N, R) = (B * H, W, C)

so one kernel serves both axes, forward and inverse (``TRANSPOSE``). Between the passes
the spectrum sits in a global scratch (L2 when it fits). The elementwise multiply by E
is fused into the epilogue of the pass that produces the spectrum; the dE reduction over
the batch is its own kernel (``hco_de_kernel``), fixed order, no atomics.

When one side is short (padded <= ``configs.MAX_LINE_SIDE``), the two transforms along it
run in one "line" pass with whole lines on-chip (``hco_line_kernel``: DCT, times E,
inverse; ``hco_line_bwd_kernel``: both spectra and dE over the batch), so only the other
axis is streamed: three passes instead of four.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .kernels import _apply, _cos, _mma, _round


@triton.jit
def hco_axis_kernel(src_ptr, mat_ptr, e_ptr, dst_ptr, Z, N, R, E_PERIOD,
                    BM: tl.constexpr, BK: tl.constexpr, TZ: tl.constexpr, BN: tl.constexpr,
                    TRANSPOSE: tl.constexpr, HAS_E: tl.constexpr, ROUND_OUT: tl.constexpr,
                    ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                    PRECISION: tl.constexpr):
    """dst[z, n, r] = sum_k M[n, k] src[z, k, r]  (* E[z % E_PERIOD, n, r] if HAS_E).

    M is the N x N orthonormal DCT-II matrix (row-major, fp32) or, with TRANSPOSE, its
    transpose (the inverse). One program computes a (BM, TZ * BN) output tile: BM
    frequencies (or positions) by TZ consecutive z times BN consecutive r, so that a
    narrow R (few channels) still fills the dot's N dimension. Programs are ordered n
    fastest: the N / BM programs that read the same source columns run side by side, so
    the source is read from DRAM about once and re-read from L2.
    """
    pid = tl.program_id(0)
    tiles_n = (N + BM - 1) // BM
    tiles_r = (R + BN - 1) // BN
    n0 = (pid % tiles_n) * BM
    r0 = ((pid // tiles_n) % tiles_r) * BN
    z0 = pid // (tiles_n * tiles_r) * TZ

    n = n0 + tl.arange(0, BM)
    z = z0 + tl.arange(0, TZ)[:, None]
    r = r0 + tl.arange(0, BN)[None, :]
    col = (z.to(tl.int64) * N * R + r)  # (TZ, BN) offset of column (z, r) at row 0
    col_ok = (z < Z) & (r < R)
    acc = tl.full((BM, TZ * BN), 0, dtype=ACC_DTYPE)
    for k0 in range(0, N, BK):
        k = k0 + tl.arange(0, BK)
        if TRANSPOSE:
            m_offs = k[None, :] * N + n[:, None]
        else:
            m_offs = n[:, None] * N + k[None, :]
        m = tl.load(mat_ptr + m_offs, mask=(n[:, None] < N) & (k[None, :] < N), other=0.0)
        s_offs = k[:, None, None].to(tl.int64) * R + col[None, :, :]
        s = tl.load(src_ptr + s_offs, mask=(k[:, None, None] < N) & col_ok[None, :, :], other=0.0)
        s = tl.reshape(s, (BK, TZ * BN))
        acc = _mma(_round(m, ROUND_DTYPE, DOT_DTYPE), _round(s, ROUND_DTYPE, DOT_DTYPE), acc, PRECISION)

    acc = tl.reshape(acc, (BM, TZ, BN))
    out_offs = n[:, None, None].to(tl.int64) * R + col[None, :, :]
    out_ok = (n[:, None, None] < N) & col_ok[None, :, :]
    if HAS_E:
        e_offs = n[:, None, None].to(tl.int64) * R + (z % E_PERIOD).to(tl.int64)[None, :, :] * N * R + r[None, :, :]
        acc = acc * tl.load(e_ptr + e_offs, mask=out_ok, other=0.0).to(ACC_DTYPE)
    if ROUND_OUT:
        acc = _round(acc, ROUND_DTYPE, DOT_DTYPE)
    tl.store(dst_ptr + out_offs, acc.to(dst_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def hco_de_kernel(g_ptr, xf_ptr, e_ptr, de_ptr, B, P, SCALE_G: tl.constexpr, BLOCK: tl.constexpr,
                  NUM_STAGES: tl.constexpr, ROUND_TO: tl.constexpr):
    """de[p] = sum_b g[b, p] * xf[b, p] over b in order, in de's dtype (deterministic, any
    GPU); with SCALE_G, g[b, p] *= E[p] in place afterwards (the input of dx's inverse
    transform), rounded to g's dtype (``ROUND_TO``: fp32 under the interpreter for bf16,
    whose cast truncates, see kernels._round)."""
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = p < P
    acc_dtype = de_ptr.dtype.element_ty
    acc = tl.full((BLOCK,), 0, dtype=acc_dtype)
    if SCALE_G:
        e = tl.load(e_ptr + p, mask=ok, other=0.0).to(acc_dtype)
    g_ptrs, xf_ptrs = g_ptr + p, xf_ptr + p  # advanced by one plane per batch element
    for _ in tl.range(0, B, num_stages=NUM_STAGES):
        g = tl.load(g_ptrs, mask=ok, other=0.0).to(acc_dtype)
        acc += g * tl.load(xf_ptrs, mask=ok, other=0.0).to(acc_dtype)
        if SCALE_G:
            tl.store(g_ptrs, _round(g * e, g_ptr.dtype.element_ty, ROUND_TO), mask=ok)
        g_ptrs += P
        xf_ptrs += P
    tl.store(de_ptr + p, acc, mask=ok)


@triton.jit
def _line_tile(z, r, N, R, NP: tl.constexpr, TZ: tl.constexpr, BN: tl.constexpr):
    """Offsets and mask of the (NP, TZ * BN) tile: whole lines of length N at columns (z, r)."""
    k = tl.arange(0, NP)[:, None, None]
    offs = k.to(tl.int64) * R + (z.to(tl.int64) * N * R + r)[None, :, :]
    ok = (k < N) & ((r < R) & (z >= 0))[None, :, :]
    return offs, ok


@triton.jit
def _tile_columns(pid, Z, R, TZ: tl.constexpr, BN: tl.constexpr):
    """Program pid's TZ x BN tile of the columns (z, r) of a (Z, N, R) view, r fastest
    across programs; z is -1 past Z, so ``_line_tile`` masks those lines off."""
    tiles_r = (R + BN - 1) // BN
    r = (pid % tiles_r) * BN + tl.arange(0, BN)[None, :]
    z = (pid // tiles_r) * TZ + tl.arange(0, TZ)[:, None]
    return tl.where(z < Z, z, -1), r


@triton.jit
def hco_line_kernel(src_ptr, mat_ptr, e_ptr, dst_ptr, Z, N, R, E_PERIOD,
                    NP: tl.constexpr, TZ: tl.constexpr, BN: tl.constexpr,
                    ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                    PRECISION: tl.constexpr):
    """dst = M^T ((M src) * E) along N of a contiguous (Z, N, R) view, whole lines on-chip
    (N <= NP <= 64): the middle pass of the streamed schedule, fusing a 1-D DCT, the
    multiply by E and the inverse DCT. Always out of place (dst != src): a launch that
    reads what it writes is not safe to repeat (tests/test_backend_triton_launches.py)."""
    z, r = _tile_columns(tl.program_id(0), Z, R, TZ, BN)
    offs, ok = _line_tile(z, r, N, R, NP, TZ, BN)
    s = tl.reshape(tl.load(src_ptr + offs, mask=ok, other=0.0), (NP, TZ * BN))
    f = _apply(_cos(mat_ptr, N, NP, False, ROUND_DTYPE, DOT_DTYPE), s, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
    e_offs, _ = _line_tile(z % E_PERIOD, r, N, R, NP, TZ, BN)
    f = f * tl.reshape(tl.load(e_ptr + e_offs, mask=ok, other=0.0).to(ACC_DTYPE), (NP, TZ * BN))
    y = _apply(_cos(mat_ptr, N, NP, True, ROUND_DTYPE, DOT_DTYPE), f, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
    y = _round(tl.reshape(y, (NP, TZ, BN)), ROUND_DTYPE, DOT_DTYPE)
    tl.store(dst_ptr + offs, y.to(dst_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=["B"])
def hco_line_bwd_kernel(g_ptr, x_ptr, mat_ptr, de_ptr, B, N, R, E_PERIOD,
                        NP: tl.constexpr, TZ: tl.constexpr, BN: tl.constexpr, NUM_STAGES: tl.constexpr,
                        ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                        PRECISION: tl.constexpr):
    """dE of the streamed backward's line pass, lines whole on-chip (N <= NP <= 64).

    g and x hold dy and x transformed along the outer axis, viewed as (B * E_PERIOD, N, R).
    A program owns TZ x BN columns of E (p, r) and walks the batch in order (pipelined):
    de[p, :, r] = sum_b (M g) * (M x) along N, deterministic, no atomics. (dx's line pass
    is ``hco_line_kernel`` on g: fused in here it spilled at NP = 64.)
    """
    p, r = _tile_columns(tl.program_id(0), E_PERIOD, R, TZ, BN)
    e_offs, ok = _line_tile(p, r, N, R, NP, TZ, BN)
    acc = tl.full((NP, TZ * BN), 0, dtype=ACC_DTYPE)
    for b in tl.range(0, B, num_stages=NUM_STAGES):
        z = tl.where(p >= 0, b * E_PERIOD + p, -1)
        offs, _ = _line_tile(z, r, N, R, NP, TZ, BN)
        g = tl.reshape(tl.load(g_ptr + offs, mask=ok, other=0.0), (NP, TZ * BN))
        g = _apply(_cos(mat_ptr, N, NP, False, ROUND_DTYPE, DOT_DTYPE), g, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        xs = tl.reshape(tl.load(x_ptr + offs, mask=ok, other=0.0), (NP, TZ * BN))
        acc += g * _apply(_cos(mat_ptr, N, NP, False, ROUND_DTYPE, DOT_DTYPE), xs, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE,
                          PRECISION)
    tl.store(de_ptr + e_offs, tl.reshape(acc, (NP, TZ, BN)).to(de_ptr.dtype.element_ty), mask=ok)

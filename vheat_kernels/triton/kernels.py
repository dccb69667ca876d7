"""Fused Triton kernels of the Heat Conduction Operator (channels-last, whole planes on-chip).

One program owns batch element(s) b and a block of BC channels and holds the full
(HP, WP, BC) plane in registers. Each 1-D DCT is one ``tl.dot`` against the (padded)
cosine matrix: the plane is viewed as (side, other_side * BC), so a transform along the
leading axis is ``C @ plane``; ``_swap`` transposes the two spatial axes in between.
Padding rows and columns of the cosine matrices are zero, so padded lanes never leak
into real outputs. Dots accumulate in fp32 (fp64 for fp64 inputs); their operands are
rounded to ``ROUND_DTYPE`` (the input dtype) and fed to the dot as ``DOT_DTYPE``: on a GPU
both are the input dtype, so bf16 / fp16 use tensor cores directly and fp32 uses
``PRECISION`` ("tf32x3": tensor cores at about fp32 accuracy). The interpreter's dot
multiplies raw bf16 bit patterns, so under TRITON_INTERPRET=1 bf16 operands are rounded
to bf16 and then multiplied in fp32: the same values as on the GPU, exactly rounded sums.

Frequency planes are kept in (m, n, c) order (W-frequency leading), which is how E is
loaded; ``_plane_offsets`` builds the channels-last addresses for either order.
"""
from __future__ import annotations

import triton
import triton.language as tl


# Whether @triton.jit below produced interpreter functions (hco.kernels() reloads on change).
INTERPRETED = bool(triton.knobs.runtime.interpret)


@triton.jit
def _plane_offsets(A, B_, C, AP: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr, c0, A_STRIDE, B_STRIDE):
    """(AP, BP, BC) offsets a * A_STRIDE + b * B_STRIDE + c and the in-bounds mask."""
    a = tl.arange(0, AP)[:, None, None]
    b = tl.arange(0, BP)[None, :, None]
    c = c0 + tl.arange(0, BC)[None, None, :]
    offs = a * A_STRIDE + b * B_STRIDE + c
    mask = (a < A) & (b < B_) & (c < C)
    return offs, mask


@triton.jit
def _round(v, ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr):
    """v rounded to ROUND_DTYPE (round to nearest even), returned as DOT_DTYPE.

    ROUND bf16 with DOT fp32 only happens under the interpreter, whose fp32 -> bf16 cast
    truncates; there the rounding is done on the bits (finite values) so the interpreter
    sees the same numbers as a GPU, whose cast rounds to nearest even.
    """
    if ROUND_DTYPE == tl.bfloat16 and DOT_DTYPE == tl.float32:
        bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)
    else:
        return v.to(ROUND_DTYPE).to(DOT_DTYPE)


@triton.jit
def _cos(ptr, N, NP: tl.constexpr, TRANSPOSE: tl.constexpr, ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr):
    """Orthonormal DCT-II matrix (row-major N x N fp32 at ptr) zero-padded to (NP, NP)."""
    r = tl.arange(0, NP)[:, None]
    k = tl.arange(0, NP)[None, :]
    if TRANSPOSE:
        offs = k * N + r
    else:
        offs = r * N + k
    return _round(tl.load(ptr + offs, mask=(r < N) & (k < N), other=0.0), ROUND_DTYPE, DOT_DTYPE)


@triton.jit
def _tf32(v, TRUNCATE: tl.constexpr):
    """fp32 v with its mantissa cut to tf32's 10 bits: rounded to nearest (ties away, as
    ``cvt.rna.tf32.f32``) or truncated (what a tensor core does to its tf32 inputs)."""
    bits = v.to(tl.uint32, bitcast=True)
    if not TRUNCATE:
        bits = bits + 0x1000
    return (bits & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def _mma(a, b, acc, PRECISION: tl.constexpr):
    """acc + a @ b. PRECISION "tf32x3_emulated" reproduces, in exact fp32 dots, what Triton's
    tf32x3 does on a GPU (F32DotTC): a = hi + lo with hi = rna_tf32(a), lo = a - hi as the
    tensor core reads it (truncated to tf32); small = lo_a @ hi_b + hi_a @ lo_b;
    result = acc + (hi_a @ hi_b + small). The interpreter uses it for fp32 so that the
    tests check the GPU's arithmetic instead of an exact fp32 dot."""
    if PRECISION == "tf32x3_emulated":
        a_hi = _tf32(a, False)
        b_hi = _tf32(b, False)
        a_lo = _tf32(a - a_hi, True)
        b_lo = _tf32(b - b_hi, True)
        small = tl.dot(a_lo, b_hi, input_precision="ieee", out_dtype=tl.float32)
        small = tl.dot(a_hi, b_lo, small, input_precision="ieee", out_dtype=tl.float32)
        return acc + tl.dot(a_hi, b_hi, small, input_precision="ieee", out_dtype=tl.float32)
    else:
        return tl.dot(a, b, acc, input_precision=PRECISION, out_dtype=acc.dtype)


@triton.jit
def _apply(mat, plane, ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """mat (P, P) @ plane (P, rest): a 1-D transform along the plane's leading axis."""
    if PRECISION == "tf32x3_emulated":
        acc = tl.full((mat.shape[0], plane.shape[1]), 0, dtype=ACC_DTYPE)
        return _mma(mat, _round(plane, ROUND_DTYPE, DOT_DTYPE), acc, PRECISION)
    else:
        # No zero accumulator operand: it costs registers that the planes need.
        return tl.dot(mat, _round(plane, ROUND_DTYPE, DOT_DTYPE), input_precision=PRECISION, out_dtype=ACC_DTYPE)


@triton.jit
def _swap(plane, AP: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
    """(AP, BP * BC) -> (BP, AP * BC): swap the two spatial axes."""
    return tl.reshape(tl.permute(tl.reshape(plane, (AP, BP, BC)), (1, 0, 2)), (BP, AP * BC))


@triton.jit
def _dct2(x_ptr, base, S_SH, S_SW, ch_ptr, cw_ptr, H, W, C, c0, valid, HP: tl.constexpr, WP: tl.constexpr,
          BC: tl.constexpr, ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
          PRECISION: tl.constexpr):
    """Load plane (h, w, c) at x_ptr + base + h * S_SH + w * S_SW + c and return its 2-D
    DCT-II as (m, n * c).

    Each cosine matrix is loaded (from L1 / L2) right before its dot rather than kept
    live: at 64 x 64 four resident matrices would cost 64 registers per thread.
    """
    offs, mask = _plane_offsets(H, W, C, HP, WP, BC, c0, S_SH, S_SW)
    x = tl.load(x_ptr + base + offs, mask=mask & valid, other=0.0)
    ch = _cos(ch_ptr, H, HP, False, ROUND_DTYPE, DOT_DTYPE)
    t = _apply(ch, tl.reshape(x, (HP, WP * BC)), ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)  # (n, w c)
    cw = _cos(cw_ptr, W, WP, False, ROUND_DTYPE, DOT_DTYPE)
    return _apply(cw, _swap(t, HP, WP, BC), ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)  # (m, n c)


@triton.jit
def _idct2_store(f, y_ptr, base, ch_ptr, cw_ptr, H, W, C, c0, valid, HP: tl.constexpr, WP: tl.constexpr,
                 BC: tl.constexpr, ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                 PRECISION: tl.constexpr):
    """Inverse 2-D DCT of f (m, n * c) stored as plane (h, w, c) at y_ptr + base."""
    cwT = _cos(cw_ptr, W, WP, True, ROUND_DTYPE, DOT_DTYPE)
    t = _apply(cwT, f, ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)  # (w, n c)
    chT = _cos(ch_ptr, H, HP, True, ROUND_DTYPE, DOT_DTYPE)
    y = _apply(chT, _swap(t, WP, HP, BC), ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)  # (h, w c)
    offs, mask = _plane_offsets(H, W, C, HP, WP, BC, c0, W * C, C)
    y = _round(tl.reshape(y, (HP, WP, BC)), ROUND_DTYPE, DOT_DTYPE)
    tl.store(y_ptr + base + offs, y.to(y_ptr.dtype.element_ty), mask=mask & valid)


@triton.jit
def _load_freq(e_ptr, H, W, C, c0, HP: tl.constexpr, WP: tl.constexpr, BC: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """E (H, W, C) loaded in frequency-plane order (m, n * c), zero outside."""
    offs, mask = _plane_offsets(W, H, C, WP, HP, BC, c0, C, W * C)
    return tl.reshape(tl.load(e_ptr + offs, mask=mask, other=0.0).to(ACC_DTYPE), (WP, HP * BC))


@triton.jit
def hco_fwd_kernel(x_ptr, e_ptr, ch_ptr, cw_ptr, y_ptr, H, W, C, X_SB, X_SH, X_SW,
                   HP: tl.constexpr, WP: tl.constexpr, BC: tl.constexpr,
                   ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                   PRECISION: tl.constexpr):
    """y[b] = IDCT2(DCT2(x[b]) * E) for one (channel block, batch element) per program.

    1-D grid (channel block fastest): no 65535 limit on the batch. x is read through its
    strides (X_SB, X_SH, X_SW, 1); y is contiguous.
    """
    blocks = (C + BC - 1) // BC  # not tl.cdiv: @jit in triton.language.standard (see tl.full below)
    pid = tl.program_id(0)
    c0 = (pid % blocks) * BC
    b = (pid // blocks).to(tl.int64)
    f = _dct2(x_ptr, b * X_SB, X_SH, X_SW, ch_ptr, cw_ptr, H, W, C, c0, True, HP, WP, BC,
              ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
    f = f * _load_freq(e_ptr, H, W, C, c0, HP, WP, BC, ACC_DTYPE)
    _idct2_store(f, y_ptr, b * H * W * C, ch_ptr, cw_ptr, H, W, C, c0, True, HP, WP, BC,
                 ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)


# B_PER_PROG is not specialised: as 1 (every dx-only launch) Triton would unroll the
# pipelined batch loop into a body that spills where the loop does not.
@triton.jit(do_not_specialize=["B_PER_PROG"])
def hco_bwd_kernel(x_ptr, dy_ptr, e_ptr, ch_ptr, cw_ptr, dx_ptr, de_ptr, B, H, W, C,
                   X_SB, X_SH, X_SW, G_SB, G_SH, G_SW, B_PER_PROG,
                   HP: tl.constexpr, WP: tl.constexpr, BC: tl.constexpr,
                   NEED_DX: tl.constexpr, NEED_DE: tl.constexpr, NUM_STAGES: tl.constexpr,
                   ROUND_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, ACC_DTYPE: tl.constexpr,
                   PRECISION: tl.constexpr):
    """dx[b] = HCO(dy[b], E) and per-chunk partials de[chunk] = sum_b DCT2(x[b]) * DCT2(dy[b]).

    Program (channel block, chunk) walks batch elements chunk * B_PER_PROG ... in order;
    ``plane.hco_de_sum_kernel`` sums the chunk partials in a fixed order, so dE is
    deterministic (no atomics). x and dy are read through strides; dx is contiguous.
    E and the cosine matrices are re-read (L1 / L2 hits) each iteration instead of being
    kept live across the loop, leaving the registers to the planes. The batch loop is
    software-pipelined (``NUM_STAGES``): the next element's loads are issued while the
    current one is transformed. Grid (channel blocks, chunks): chunks <= 65535 by
    construction (hco.backward_plan), and a 2-D grid keeps the 255-register kernel free of
    the index arithmetic a 1-D one costs (measured: 16 B of spills at fp32 32 x 32).
    """
    c0 = tl.program_id(0) * BC
    chunk = tl.program_id(1)
    plane = H * W * C
    # tl.full, not tl.zeros: zeros is @jit in triton.language.standard and stays compiled-only
    # if triton was imported before TRITON_INTERPRET=1; the interpreter cannot call it.
    acc = tl.full((WP, HP * BC), 0, dtype=ACC_DTYPE)
    for i in tl.range(0, B_PER_PROG, num_stages=NUM_STAGES):
        b = chunk * B_PER_PROG + i
        valid = b < B
        b64 = b.to(tl.int64)
        base = b64 * plane
        g = _dct2(dy_ptr, b64 * G_SB, G_SH, G_SW, ch_ptr, cw_ptr, H, W, C, c0, valid, HP, WP, BC,
                  ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        if NEED_DX:
            e = _load_freq(e_ptr, H, W, C, c0, HP, WP, BC, ACC_DTYPE)
            _idct2_store(g * e, dx_ptr, base, ch_ptr, cw_ptr, H, W, C, c0, valid, HP, WP, BC,
                         ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
        if NEED_DE:
            acc += g * _dct2(x_ptr, b64 * X_SB, X_SH, X_SW, ch_ptr, cw_ptr, H, W, C, c0, valid, HP, WP, BC,
                             ROUND_DTYPE, DOT_DTYPE, ACC_DTYPE, PRECISION)
    if NEED_DE:
        offs, mask = _plane_offsets(W, H, C, WP, HP, BC, c0, C, W * C)
        tl.store(de_ptr + chunk.to(tl.int64) * plane + offs, tl.reshape(acc, (WP, HP, BC)), mask=mask)
